//! OTP SMS. This version has the development provider only (`SMS_PROVIDER=log`); Twilio and
//! the generic HTTP gateway are the job-kinds issue.

use jobs::payload::OtpSms;
use jobs::settings::{Env, SettingError};

use crate::outcome::{Delivered, JobError};

#[derive(Debug)]
pub enum SmsProvider {
    /// Writes the message to the log, the number masked and the code never shown.
    Log,
}

impl SmsProvider {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        match env.or("SMS_PROVIDER", "log").as_str() {
            "log" => Ok(Self::Log),
            other @ ("twilio" | "http") => Err(SettingError::new(
                "SMS_PROVIDER",
                format!("`{other}` is not available in this version yet; use log"),
            )),
            other => Err(SettingError::new("SMS_PROVIDER", format!("`{other}` is not twilio, http or log"))),
        }
    }

    #[expect(clippy::unused_async, reason = "the real providers (the job-kinds issue) await their requests")]
    pub async fn send(&self, job_id: &str, otp: &OtpSms) -> Result<Delivered, JobError> {
        match self {
            Self::Log => {
                tracing::info!(job_id, to = %mask(&otp.to), template = otp.template.as_deref().unwrap_or("default"), "sms (log provider): verification code sent, code [redacted]");
                Ok(Delivered::done())
            }
        }
    }
}

/// `+886912345678` → `+886*******78`: enough to tell numbers apart in a log, not to dial one.
pub fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    chars.iter().enumerate().map(|(i, c)| if i < 4 || i >= chars.len() - 2 { *c } else { '*' }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_masked() {
        assert_eq!(super::mask("+886912345678"), "+886*******78");
        assert_eq!(super::mask("+1234"), "*****");
    }
}

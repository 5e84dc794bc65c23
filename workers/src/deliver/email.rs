//! Email. This version has the development provider only (`EMAIL_PROVIDER=log`); SES v2 is
//! the job-kinds issue.

use jobs::payload::Email;
use jobs::settings::{Env, SettingError};

use crate::outcome::{Delivered, JobError};

#[derive(Debug)]
pub enum EmailProvider {
    /// Writes a line per message to the log: the number of recipients, never the content.
    Log,
}

impl EmailProvider {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        match env.or("EMAIL_PROVIDER", "log").as_str() {
            "log" => Ok(Self::Log),
            "ses" => Err(SettingError::new("EMAIL_PROVIDER", "`ses` is not available in this version yet; use log")),
            other => Err(SettingError::new("EMAIL_PROVIDER", format!("`{other}` is not ses or log"))),
        }
    }

    #[expect(clippy::unused_async, reason = "the real providers (the job-kinds issue) await their requests")]
    pub async fn send(&self, job_id: &str, email: &Email) -> Result<Delivered, JobError> {
        match self {
            Self::Log => {
                let recipients = email.to.len() + email.cc.len() + email.bcc.len();
                tracing::info!(
                    job_id,
                    recipients,
                    template = email.template.as_ref().map(|t| t.name.as_str()),
                    "email (log provider): sent"
                );
                Ok(Delivered::done())
            }
        }
    }
}

//! `delivery.lua` (a provider's report put on a job), and how `finish.lua` and `cancel.lua` keep
//! a report on the compact records they write, run against a real Redis (`REDIS_URL`) under a
//! namespace of their own; each test asserts the record and the expiry left behind.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::delivery::{Delivery, DeliveryOutcome, DeliveryStatus, StoredDelivery};
use jobs::queue::{Finished, Leased, Outcome, Queue, Retention};
use jobs::record::JobRecord;
use jobs::{JobStatus, Kind, NewJob};

use lab::Lab;

const LEASE: Duration = Duration::from_secs(30);

impl Lab {
    fn queue(&self) -> Queue {
        Queue::new(self.conn.clone(), &self.keys, Kind::OtpSms, "w1")
    }

    async fn enqueued(&self) -> NewJob {
        let job = NewJob {
            payload: r#"{"to":"+886912345678","code":"482913","ttl_seconds":300}"#.into(),
            ..lab::job(Kind::OtpSms)
        };
        self.store().enqueue(std::slice::from_ref(&job)).await.unwrap();
        job
    }

    async fn lease(&self) -> Leased {
        self.queue().fetch(LEASE, 1, 10).await.unwrap().remove(0).0
    }

    async fn succeed(&self, job: Leased) {
        let now = Utc::now();
        let done = Finished {
            job,
            outcome: Outcome::Succeeded,
            error: None,
            provider_id: Some("SM1".into()),
            started_at: now,
            finished_at: now,
        };
        let retention = Retention { finished: Duration::from_hours(1), ..Retention::default() };
        self.queue().finish(&[done], now, &retention).await.unwrap();
    }

    async fn report(&self, id: &str, status: DeliveryStatus, detail: Option<&str>) -> DeliveryOutcome {
        self.store().record_delivery(Kind::OtpSms, id, &Delivery::new(status, at(), detail)).await.unwrap()
    }

    async fn record(&self, id: &str) -> Option<JobRecord> {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.queue(Kind::OtpSms).job(id))
            .query_async(&mut self.conn.clone())
            .await
            .unwrap();
        raw.map(|r| JobRecord::decode(&r).unwrap())
    }

    async fn pttl(&self, id: &str) -> i64 {
        redis::cmd("PTTL").arg(self.keys.queue(Kind::OtpSms).job(id)).query_async(&mut self.conn.clone()).await.unwrap()
    }
}

/// When the reports say they happened: fixed, so records compare exactly.
fn at() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_764_300_000_123).unwrap()
}

fn stored(status: DeliveryStatus, detail: Option<&str>) -> StoredDelivery {
    StoredDelivery { status, at: at().timestamp_millis(), detail: detail.map(str::to_owned) }
}

#[tokio::test]
async fn a_report_for_an_unknown_job_is_dropped_and_writes_nothing() {
    let lab = Lab::new();
    let id = uuid::Uuid::now_v7().to_string();
    assert_eq!(lab.report(&id, DeliveryStatus::Delivered, None).await, DeliveryOutcome::Unknown);
    assert_eq!(lab.record(&id).await, None, "no record is made for it");
    assert_eq!(lab.report("not-a-uuid", DeliveryStatus::Delivered, None).await, DeliveryOutcome::Unknown);
    // Another kind's queue does not hold an SMS job's id.
    let job = lab.enqueued().await;
    let other = lab
        .store()
        .record_delivery(Kind::Email, &job.id.to_string(), &Delivery::new(DeliveryStatus::Bounced, at(), None))
        .await
        .unwrap();
    assert_eq!(other, DeliveryOutcome::Unknown);
}

#[tokio::test]
async fn reports_follow_their_precedence_and_a_resend_changes_nothing() {
    let lab = Lab::new();
    let job = lab.enqueued().await;
    let id = job.id.to_string();
    let before = lab.record(&id).await.unwrap();
    // (report, what it answers, what the record then holds)
    let table = [
        (DeliveryStatus::Delivered, Some("ok"), DeliveryOutcome::Recorded, DeliveryStatus::Delivered, Some("ok")),
        (DeliveryStatus::Delivered, Some("again"), DeliveryOutcome::Unchanged, DeliveryStatus::Delivered, Some("ok")),
        (DeliveryStatus::Bounced, Some("5.1.1"), DeliveryOutcome::Recorded, DeliveryStatus::Bounced, Some("5.1.1")),
        (DeliveryStatus::Undelivered, None, DeliveryOutcome::Unchanged, DeliveryStatus::Bounced, Some("5.1.1")),
        (DeliveryStatus::Delivered, None, DeliveryOutcome::Unchanged, DeliveryStatus::Bounced, Some("5.1.1")),
        (DeliveryStatus::Complained, None, DeliveryOutcome::Recorded, DeliveryStatus::Complained, None),
        (DeliveryStatus::Complained, Some("x"), DeliveryOutcome::Unchanged, DeliveryStatus::Complained, None),
    ];
    for (i, (status, detail, outcome, held, held_detail)) in table.into_iter().enumerate() {
        assert_eq!(lab.report(&id, status, detail).await, outcome, "step {i}");
        let record = lab.record(&id).await.unwrap();
        assert_eq!(record.delivery, Some(stored(held, held_detail)), "step {i}");
        assert_eq!(JobRecord { delivery: None, ..record }, before, "step {i}: nothing else changes");
    }
    assert_eq!(lab.pttl(&id).await, -1, "a waiting job's record has no expiry, and gets none");
}

#[tokio::test]
async fn a_report_keeps_the_finished_records_expiry_and_survives_the_success() {
    let lab = Lab::new();
    // Reported while the worker still holds it: the success keeps the report.
    let job = lab.enqueued().await;
    let id = job.id.to_string();
    let leased = lab.lease().await;
    assert_eq!(lab.report(&id, DeliveryStatus::Delivered, None).await, DeliveryOutcome::Recorded);
    lab.succeed(leased).await;
    let record = lab.record(&id).await.unwrap();
    assert_eq!((record.status, record.payload.as_deref()), (JobStatus::Succeeded, None));
    assert_eq!(record.delivery, Some(stored(DeliveryStatus::Delivered, None)));
    assert_eq!(record.provider_message_id.as_deref(), Some("SM1"));
    // Reported after the success: the record keeps its expiry.
    let ttl = lab.pttl(&id).await;
    assert!((3_590_000..=3_600_000).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        lab.report(&id, DeliveryStatus::Undelivered, Some("carrier said no to +886912345678")).await,
        DeliveryOutcome::Recorded
    );
    let record = lab.record(&id).await.unwrap();
    assert_eq!(record.delivery, Some(stored(DeliveryStatus::Undelivered, Some("carrier said no to [digits]"))));
    assert_eq!(record.status, JobStatus::Succeeded);
    let kept = lab.pttl(&id).await;
    assert!(kept > 3_580_000 && kept <= ttl, "KEEPTTL: {kept} after {ttl}");
    // The status answer shows it.
    let info = lab.store().job(&id).await.unwrap().unwrap();
    let shown = info.delivery.unwrap();
    assert_eq!((shown.status, shown.at), (DeliveryStatus::Undelivered, at()));
    assert_eq!(shown.detail.as_deref(), Some("carrier said no to [digits]"));
}

#[tokio::test]
async fn a_cancelled_record_keeps_its_report() {
    let lab = Lab::new();
    let job = lab.enqueued().await;
    let id = job.id.to_string();
    assert_eq!(lab.report(&id, DeliveryStatus::Undelivered, None).await, DeliveryOutcome::Recorded);
    let retention = Kind::ALL.into_iter().map(|k| (k, Duration::from_hours(2))).collect();
    let control = jobs::control::Control::new(lab.conn.clone(), lab.keys.clone(), retention, Duration::from_secs(5));
    control.cancel(&id, None).await.unwrap();
    let record = lab.record(&id).await.unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    assert_eq!(record.delivery, Some(stored(DeliveryStatus::Undelivered, None)));
}

//! The suppression list against a real Redis (`REDIS_URL`), each test under a namespace of its
//! own: the exact keys `suppress.lua` and `unsuppress.lua` leave, the cap's eviction, the batched
//! look-up and the search pages.

#![expect(clippy::unwrap_used, reason = "a fixture that cannot be set up fails the test, loudly")]

mod lab;

use chrono::{DateTime, Duration, Utc};
use jobs::suppression::{SuppressionReason, Suppressions};

use lab::Lab;

impl Lab {
    fn list(&self, cap: u64) -> Suppressions {
        Suppressions::new(self.conn.clone(), &self.keys, cap)
    }

    fn entries(&self) -> String {
        format!("{}:{{suppressions}}:entries", self.namespace)
    }

    fn order(&self) -> String {
        format!("{}:{{suppressions}}:order", self.namespace)
    }

    async fn zset(&self) -> Vec<(String, i64)> {
        redis::cmd("ZRANGE")
            .arg(self.order())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await
            .unwrap()
    }

    async fn clean(&self) {
        let _: () =
            redis::cmd("DEL").arg(self.entries()).arg(self.order()).query_async(&mut self.conn.clone()).await.unwrap();
    }
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000 + s, 0).unwrap()
}

#[tokio::test]
async fn an_entry_is_stored_normalised_refreshed_and_removed() {
    let lab = Lab::new();
    let list = lab.list(10);
    let added =
        list.add("Ada <Ada@Example.ORG>", SuppressionReason::Bounce, "smtp; 550 5.1.1", Some("j-1"), t(0)).await;
    assert_eq!(added.unwrap(), Some(true));
    let raw: Option<String> =
        redis::cmd("HGET").arg(lab.entries()).arg("ada@example.org").query_async(&mut lab.conn.clone()).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&raw.unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"reason": "bounce", "at": t(0).timestamp_millis(), "detail": "smtp; 550 5.1.1", "job": "j-1"})
    );
    assert_eq!(lab.zset().await, vec![("ada@example.org".to_owned(), t(0).timestamp_millis())]);

    // The same address again: one entry, the newer one.
    assert_eq!(
        list.add("ada@example.org", SuppressionReason::Complaint, "abuse", None, t(5)).await.unwrap(),
        Some(false)
    );
    let entry = list.get("ADA@example.org").await.unwrap().unwrap();
    assert_eq!((entry.reason, entry.at, entry.job_id), (SuppressionReason::Complaint, t(5), None));
    assert_eq!(lab.zset().await, vec![("ada@example.org".to_owned(), t(5).timestamp_millis())]);
    assert_eq!(list.add("not an address", SuppressionReason::Manual, "", None, t(6)).await.unwrap(), None);

    let removed = list.remove("Ada@example.org").await.unwrap().unwrap();
    assert_eq!(removed.address, "ada@example.org");
    assert!(list.remove("ada@example.org").await.unwrap().is_none());
    let exists: i64 =
        redis::cmd("EXISTS").arg(lab.entries()).arg(lab.order()).query_async(&mut lab.conn.clone()).await.unwrap();
    assert_eq!(exists, 0, "nothing left behind");
}

#[tokio::test]
async fn the_cap_evicts_the_oldest_and_the_lookup_finds_any_recipient() {
    let lab = Lab::new();
    let list = lab.list(3);
    for (i, a) in ["a@x.org", "b@x.org", "c@x.org", "d@x.org"].iter().enumerate() {
        list.add(a, SuppressionReason::Bounce, "", None, t(i64::try_from(i).unwrap())).await.unwrap();
    }
    assert_eq!(list.count().await.unwrap(), 3);
    assert!(list.get("a@x.org").await.unwrap().is_none(), "the oldest went");
    let members: Vec<String> = lab.zset().await.into_iter().map(|(m, _)| m).collect();
    assert_eq!(members, ["b@x.org", "c@x.org", "d@x.org"]);

    let hit = list.first_listed(["ok@x.org", "junk", "Someone <C@X.org>", "d@x.org"]).await.unwrap().unwrap();
    assert_eq!(hit.address, "c@x.org");
    assert!(list.first_listed(["ok@x.org", "a@x.org"]).await.unwrap().is_none());
    assert!(list.first_listed(std::iter::empty()).await.unwrap().is_none());
    lab.clean().await;
}

#[tokio::test]
async fn a_search_pages_through_the_matches_once_each() {
    let lab = Lab::new();
    let list = lab.list(10_000);
    for i in 0..700 {
        let domain = if i % 2 == 0 { "even.example" } else { "odd.example" };
        list.add(&format!("u{i}@{domain}"), SuppressionReason::Manual, "", None, t(0) + Duration::seconds(i))
            .await
            .unwrap();
    }
    list.add("star*@odd.example", SuppressionReason::Manual, "", None, t(0)).await.ok();
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = list.search("EVEN.example", cursor.as_deref(), 40).await.unwrap();
        assert!(page.items.len() <= 40);
        for item in page.items {
            assert!(item.address.ends_with("@even.example"), "{}", item.address);
            assert!(seen.insert(item.address), "no entry twice");
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 350);
    let glob = list.search("u1?", None, 200).await.unwrap();
    assert!(glob.items.is_empty(), "glob characters match literally: {:?}", glob.items);
    lab.clean().await;
}

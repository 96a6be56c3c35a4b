//! The demo's CRM scenarios against the Salesforce simulator: S3 (opportunities to the regional
//! sales group) and S6 (10,000 updates under a 1,000-call quota).

use super::{until, ScenarioResult, Timeline, DEMO_WEBHOOK_SECRET};
use crate::gateway::Gateway;
use crate::sims::DingTalkHarness;
use connect::webhook::WebhookSecret;
use connectors::dingtalk::sim::cards::{CardSpace, CardView};
use connectors::salesforce::sim::{seed, SalesforceSim};
use sim::Simulator;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::sender::{SenderSettings, WebhookSender};

const SALES_HK: &str = "cid7Hk2PqRsTuVwXyZ0aBcDe+Q==";
const SALES_PRC: &str = "cidPrC8sAlEs3GbA7wQxYz1Kj==";
/// The demo org's daily API allocation and the reserve the config keeps for approvals.
pub const DAILY_LIMIT: u64 = 1_000;
const RESERVE: u64 = 200;

fn cards_in(dingtalk: &DingTalkHarness, group: &str) -> Vec<CardView> {
    let in_group = |c: &CardView| {
        c.spaces
            .iter()
            .any(|s| matches!(s, CardSpace::Group { open_conversation_id, .. } if open_conversation_id == group))
    };
    dingtalk.sim().cards.cards().into_iter().filter(in_group).collect()
}

pub async fn scenario_opportunities(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    salesforce: &Arc<SalesforceSim>,
) -> ScenarioResult {
    ScenarioResult::of(
        "S3",
        "opportunity -> regional sales group: account + last activities, 1 API call, 3 edits = 1 card",
        opportunity_steps(timeline, dingtalk, salesforce),
    )
    .await
}

async fn opportunity_steps(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    salesforce: &Arc<SalesforceSim>,
) -> anyhow::Result<()> {
    let calls_before = salesforce.api_calls();
    let mut last_edit = Instant::now();
    for (i, stage) in ["Proposal/Price Quote", "Negotiation/Review", "Negotiation/Review"].iter().enumerate() {
        let change = serde_json::json!({"Id": seed::OPPORTUNITY_ID, "StageName": stage, "NextStep": format!("pricing round {}", i + 1)});
        salesforce.put_record("Opportunity", change).await?;
        last_edit = Instant::now();
        timeline.line("SF", format!("a sales rep edits {} (HKD 1,250,000): stage {stage}", seed::OPPORTUNITY_ID));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    salesforce
        .put_record("Opportunity", serde_json::json!({"Id": "0065g00000Qx1ZrAAJ", "StageName": "Needs Analysis"}))
        .await?;
    timeline.line("SF", "a sales rep edits 0065g00000Qx1ZrAAJ (CNY 2,600,000, Shenzhen account)");
    salesforce
        .put_record("Opportunity", serde_json::json!({"Id": "0065g00000Qx1ZqAAJ", "NextStep": "send brochure"}))
        .await?;
    timeline.line("SF", "a sales rep edits 0065g00000Qx1ZqAAJ (HKD 380,000: under the HKD 500,000 bar)");

    let hk =
        until("the Hong Kong sales card", Duration::from_secs(20), || cards_in(dingtalk, SALES_HK).into_iter().next())
            .await?;
    let after_last_edit = last_edit.elapsed();
    let prc =
        until("the mainland sales card", Duration::from_secs(20), || cards_in(dingtalk, SALES_PRC).into_iter().next())
            .await?;
    let param = |c: &CardView, k: &str| c.params.get(k).cloned().unwrap_or_default();
    timeline.line(
        "OUT",
        format!(
            "dingtalk card -> sales-hk: {} / {} / {}",
            param(&hk, "title"),
            param(&hk, "amount"),
            param(&hk, "account")
        ),
    );
    for line in param(&hk, "activities").lines() {
        timeline.line("", format!("    activity {line}"));
    }
    timeline.line("OUT", format!("dingtalk card -> sales-prc: {} / {}", param(&prc, "title"), param(&prc, "amount")));
    // Past the window: no second card for the other two edits, none for the small deal.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hk_cards = cards_in(dingtalk, SALES_HK).len();
    anyhow::ensure!(
        hk_cards == 1,
        "{hk_cards} cards in sales-hk, expected 1 for 3 edits and no card for the small deal"
    );
    let calls = salesforce.api_calls() - calls_before;
    anyhow::ensure!(calls <= 3, "{calls} Salesforce API calls for 3 opportunities (at most 1 each)");
    timeline.line(
        "NOTE",
        format!(
            "{calls} Salesforce API calls for 5 edits of 3 opportunities; card {} ms after the last edit (5 s coalescing window)",
            after_last_edit.as_millis()
        ),
    );
    Ok(())
}

pub async fn scenario_quota(
    timeline: &Timeline,
    base: &str,
    gateway: &Gateway,
    salesforce: &Arc<SalesforceSim>,
) -> ScenarioResult {
    ScenarioResult::of(
        "S6",
        "10,000 account updates into Salesforce under a 1,000-call quota, reserve kept",
        quota_steps(timeline, base, gateway, salesforce),
    )
    .await
}

async fn quota_steps(
    timeline: &Timeline,
    base: &str,
    gateway: &Gateway,
    salesforce: &Arc<SalesforceSim>,
) -> anyhow::Result<()> {
    const CUSTOMERS: usize = 2_500;
    const ROUNDS: usize = 4;
    let calls_before = salesforce.api_calls();
    let done_before = gateway.store.stats(0).await?.done;
    let sender = WebhookSender::new(
        &format!("{base}/hooks/erp-events"),
        WebhookSecret::parse(DEMO_WEBHOOK_SECRET)?,
        SenderSettings::default(),
    )?;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let next = Arc::new(AtomicUsize::new(0));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (next, sender) = (next.clone(), sender.clone());
            senders.spawn(async move {
                loop {
                    let c = next.fetch_add(1, Ordering::SeqCst);
                    if c >= CUSTOMERS {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let status = ["Good", "Watch", "Hold", "Good"][round];
                    let event = serde_json::json!({"type": "customer_credit.updated", "timestamp": jiff::Timestamp::now().to_string(),
                        "data": {"id": format!("C-{c:05}"), "credit_status": status, "credit_limit": 50_000 + 1_000 * round}});
                    sender.send(&format!("credit-{round}-{c}"), &event).await?;
                }
            });
        }
        while let Some(sent) = senders.join_next().await {
            sent??;
        }
    }
    let total = (CUSTOMERS * ROUNDS) as u64;
    timeline.line(
        "IN",
        format!(
            "erp-events customer_credit.updated x {total} ({CUSTOMERS} customers, {ROUNDS} each) in {} ms",
            started.elapsed().as_millis()
        ),
    );
    // Wait on the gateway's own count (cheap), then check every account once in the simulator.
    let deadline = Instant::now() + Duration::from_secs(60);
    while gateway.store.stats(0).await?.done < done_before + total {
        anyhow::ensure!(Instant::now() < deadline, "the 10,000 updates were not all delivered within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let landed_ms = started.elapsed().as_millis();
    let wrong = (0..CUSTOMERS)
        .filter(|c| {
            let account = salesforce.find("Account", "ERP_Customer_No__c", &format!("C-{c:05}"));
            !account.is_some_and(|a| a["Credit_Status__c"] == "Good" && a["Credit_Limit__c"] == 53_000)
        })
        .count();
    anyhow::ensure!(wrong == 0, "{wrong} accounts lack their last credit status");
    let calls = salesforce.api_calls() - calls_before;
    let used = salesforce.api_calls();
    timeline.line(
        "OUT",
        format!(
            "salesforce: {CUSTOMERS} accounts upserted with their last status in {calls} API calls ({landed_ms} ms after the first update)"
        ),
    );
    timeline.line(
        "NOTE",
        format!(
            "{used} of {DAILY_LIMIT} daily calls used; {} left, the {RESERVE} reserved for approvals untouched",
            DAILY_LIMIT - used
        ),
    );
    anyhow::ensure!(calls <= 60, "{calls} API calls for 10,000 updates (limit 60)");
    anyhow::ensure!(DAILY_LIMIT - used >= RESERVE, "the approvals reserve was used");
    Ok(())
}

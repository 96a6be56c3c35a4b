//! The card client against this simulator part over loopback HTTP.

use super::*;
use crate::dingtalk::cards::{CardClick, CardsClient};
use crate::dingtalk::openapi::{AppCredentials, OpenApi, OpenApiSettings};
use crate::dingtalk::sim::org::{SEED_AGENT_ID, SEED_APP_KEY, SEED_APP_SECRET, SEED_CORP_ID};
use connect::{DeliveryError, Disposition};
use std::sync::atomic::AtomicI64;

const OPS_GROUP: &str = "cidAbCdEfGhIjKlMnOpQrStUv==";
const TEMPLATE: &str = "00000000-0000-4000-8000-000000000abc.schema";

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

struct Harness {
    sim: Arc<CardsSim>,
    events: Arc<EventRouter>,
    client: CardsClient,
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn harness() -> Harness {
    let clock = Arc::new(ManualClock(AtomicI64::new(1_767_225_600_000)));
    let org = Org::seeded(clock.clone());
    let events = Arc::new(EventRouter::new(clock.clone(), SEED_CORP_ID));
    let sim = Arc::new(CardsSim::new(org.clone(), events.clone(), clock.clone()));
    let base = serve(org.router().merge(sim.clone().router())).await;
    let credentials = AppCredentials {
        app_key: SEED_APP_KEY.to_owned(),
        app_secret: SEED_APP_SECRET.to_owned().into(),
        agent_id: Some(SEED_AGENT_ID),
        corp_id: Some(SEED_CORP_ID.to_owned()),
    };
    let api = OpenApi::new(credentials, OpenApiSettings::with_base(&base), clock).unwrap();
    Harness { sim, events, client: CardsClient::new(api) }
}

fn params(status: &str) -> CardParams {
    CardParams::new().text("title", "Purchase Request PO-1").value("amount", json!(12800)).text("status", status)
}

fn group_card(out_track_id: &str) -> CardInstance {
    CardInstance::to_group(TEMPLATE, out_track_id, OPS_GROUP, SEED_APP_KEY, params("pending"))
        .with_private("manager4711", CardParams::new().text("canApprove", "true"))
        .with_stream_callback()
        .with_at("manager4711", "Manager")
        .with_recipients(&["manager4711", "boss0001"])
}

/// Sends `body` as is, bypassing the client's own checks, to see the simulator's answer.
async fn raw(h: &Harness, method: http::Method, path: &str, body: Value) -> Result<Value, DeliveryError> {
    h.client.api().call_new(method, path, &[], Some(&body)).await
}

fn assert_code(result: Result<Value, DeliveryError>, code: &str) {
    let err = result.expect_err("the simulator should refuse this");
    assert_eq!(err.disposition(), Disposition::Permanent, "{err}");
    assert!(err.to_string().contains(code), "expected {code} in: {err}");
}

#[tokio::test]
async fn create_and_deliver_then_update_then_idempotent_recreate() {
    let h = harness().await;
    let card = group_card("dingbridge-pr-PO-1-v1");
    let created = h.client.create_and_deliver(&card).await.unwrap();
    assert_eq!(created.out_track_id, "dingbridge-pr-PO-1-v1");
    assert!(!created.already_existed);
    assert_eq!(created.deliver_results.len(), 1);
    let delivered = &created.deliver_results[0];
    assert_eq!(
        (delivered.space_type.as_str(), delivered.space_id.as_str(), delivered.success),
        ("IM_GROUP", OPS_GROUP, true)
    );

    let stored = h.sim.card("dingbridge-pr-PO-1-v1").unwrap();
    assert_eq!(stored.card_data["amount"], "12800");
    assert_eq!(stored.callback, Some(CardCallbackRoute::Stream));
    // Recipients only: a group member outside them, and a non-member, see nothing.
    assert_eq!(h.sim.cards_for_user("manager4711")[0].params["canApprove"], "true");
    assert!(!h.sim.cards_for_user("boss0001")[0].params.contains_key("canApprove"));
    assert!(h.sim.cards_for_user("staff0815").is_empty());
    assert!(h.sim.cards_for_user("sales0101").is_empty());

    // By key: merged into what is there.
    let private = BTreeMap::from([("manager4711".to_owned(), CardParams::new().text("canApprove", "false"))]);
    h.client
        .update("dingbridge-pr-PO-1-v1", Some(CardParams::new().text("status", "approved")), private, true)
        .await
        .unwrap();
    let view = &h.sim.cards_for_user("manager4711")[0];
    assert_eq!(view.params["status"], "approved");
    assert_eq!(view.params["title"], "Purchase Request PO-1");
    assert_eq!(view.params["canApprove"], "false");

    // Not by key: the given map replaces the card data.
    h.client
        .update("dingbridge-pr-PO-1-v1", Some(CardParams::new().text("status", "closed")), BTreeMap::new(), false)
        .await
        .unwrap();
    let stored = h.sim.card("dingbridge-pr-PO-1-v1").unwrap();
    assert_eq!(stored.card_data, BTreeMap::from([("status".to_owned(), "closed".to_owned())]));
    assert_eq!(stored.history.iter().map(|c| c.source).collect::<Vec<_>>(), ["create", "deliver", "update", "update"]);

    // The same create again (an outbox retry): the first answer, no second card, no reset.
    let again = h.client.create_and_deliver(&card).await.unwrap();
    assert_eq!(again, created);
    assert_eq!(h.sim.cards().len(), 1);
    assert_eq!(h.sim.card("dingbridge-pr-PO-1-v1").unwrap().card_data["status"], "closed");
}

#[tokio::test]
async fn create_then_deliver_separately() {
    let h = harness().await;
    let card = CardInstance::to_robot_chat(TEMPLATE, "t-two-step", "staff0815", SEED_APP_KEY, params("pending"));
    let mut create = serde_json::to_value(&card).unwrap();
    let object = create.as_object_mut().unwrap();
    for key in ["openSpaceId", "imRobotOpenDeliverModel"] {
        object.remove(key);
    }
    assert_eq!(
        raw(&h, http::Method::POST, "/v1.0/card/instances", create).await.unwrap(),
        json!({"success": true, "result": "t-two-step"})
    );
    assert!(h.sim.cards_for_user("staff0815").is_empty(), "created, not delivered");
    let deliver = json!({
        "outTrackId": "t-two-step", "openSpaceId": card.open_space_id, "userIdType": 1,
        "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": SEED_APP_KEY},
    });
    let answer = raw(&h, http::Method::POST, "/v1.0/card/instances/deliver", deliver.clone()).await.unwrap();
    assert_eq!(answer["result"][0]["spaceType"], "IM_ROBOT");
    assert_eq!(h.sim.cards_for_user("staff0815").len(), 1);
    // Delivering to the same place again keeps one space and its carrier.
    let again = raw(&h, http::Method::POST, "/v1.0/card/instances/deliver", deliver).await.unwrap();
    assert_eq!(again["result"][0]["carrierId"], answer["result"][0]["carrierId"]);
    assert_eq!(h.sim.card("t-two-step").unwrap().spaces.len(), 1);
}

#[tokio::test]
async fn validation_answers_param_codes() {
    let h = harness().await;
    let path = "/v1.0/card/instances/createAndDeliver";
    let body = |f: &dyn Fn(&mut Value)| {
        let mut body = serde_json::to_value(group_card("t-bad")).unwrap();
        f(&mut body);
        body
    };
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["cardTemplateId"] = json!(""))).await,
        "param.cardTemplateIdEmpty",
    );
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["outTrackId"] = json!(" "))).await,
        "param.outTrackIdEmpty",
    );
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["privateData"] = json!({"ghost": {"cardParamMap": {}}}))).await,
        "param.userIdNotExist",
    );
    assert_code(
        raw(
            &h,
            http::Method::POST,
            path,
            body(&|b| b["imGroupOpenDeliverModel"]["recipients"] = json!(["leaver0099"])),
        )
        .await,
        "param.userIdNotExist",
    );
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["openSpaceId"] = json!("dtv1.card//IM_GROUP.cidNoSuchGroup==")))
            .await,
        "param.openSpaceIdInvalid",
    );
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["cardData"]["cardParamMap"]["amount"] = json!(12800))).await,
        "param.cardParamMapInvalid",
    );
    assert_code(
        raw(
            &h,
            http::Method::POST,
            path,
            body(&|b| {
                b.as_object_mut().unwrap().remove("imGroupOpenDeliverModel");
            }),
        )
        .await,
        "param.openSpaceModelInvalid",
    );
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["imGroupOpenDeliverModel"]["robotCode"] = json!("someone-else")))
            .await,
        "param.robotCodeInvalid",
    );
    assert!(h.sim.cards().is_empty(), "refused creates store nothing");

    h.client.create_and_deliver(&group_card("t-bad")).await.unwrap();
    assert_code(
        raw(&h, http::Method::POST, path, body(&|b| b["cardData"]["cardParamMap"]["status"] = json!("other"))).await,
        "param.outTrackIdConflict",
    );
    let update = |id: &str, data: Value| json!({"outTrackId": id, "cardData": {"cardParamMap": data}});
    assert_code(
        raw(&h, http::Method::PUT, "/v1.0/card/instances", update("t-none", json!({}))).await,
        "param.outTrackIdNotExist",
    );
    assert_code(
        raw(&h, http::Method::PUT, "/v1.0/card/instances", update("t-bad", json!({"n": 1}))).await,
        "param.cardParamMapInvalid",
    );

    // The client refuses what it can see is wrong before sending.
    let mut empty = group_card("t-x");
    empty.card_template_id.clear();
    assert!(matches!(h.client.create_and_deliver(&empty).await, Err(DeliveryError::BadPayload { .. })));
}

/// A card callback subscriber on loopback: records clicks, answers `update`.
async fn subscriber(update: Value) -> (String, Arc<Mutex<Vec<CardClick>>>) {
    let clicks = Arc::new(Mutex::new(Vec::new()));
    let seen = clicks.clone();
    let app = Router::new().route(
        "/card",
        post(move |Json(data): Json<Value>| {
            let (seen, update) = (seen.clone(), update.clone());
            async move {
                seen.lock().unwrap().push(CardClick::from_data(&data).unwrap());
                Json(update)
            }
        }),
    );
    (format!("{}/card", serve(app).await), clicks)
}

#[tokio::test]
async fn click_goes_to_the_callback_and_its_answer_is_applied() {
    let h = harness().await;
    let answer = CardUpdate::merge(
        CardParams::new().text("status", "approved").text("approver", "manager4711"),
        Some(CardParams::new().text("myAction", "approve")),
    );
    let (url, clicks) = subscriber(answer.to_ack_data()).await;
    h.client.register_callback("erp", &url, &"route-secret".to_owned().into()).await.unwrap();
    assert_eq!(h.events.card_route_url(SEED_APP_KEY, "erp").as_deref(), Some(url.as_str()));

    let card = CardInstance::to_group(TEMPLATE, "t-click", OPS_GROUP, SEED_APP_KEY, params("pending"))
        .with_http_callback("erp")
        .with_private("manager4711", CardParams::new().text("canApprove", "true"));
    h.client.create_and_deliver(&card).await.unwrap();

    let view = h.sim.click("t-click", "manager4711", "approve", json!({"comment": "OK within budget"})).await.unwrap();
    assert_eq!(view.viewer.as_deref(), Some("manager4711"));
    assert_eq!(view.params["status"], "approved");
    assert_eq!(view.params["title"], "Purchase Request PO-1", "merged by key");
    assert_eq!(view.params["myAction"], "approve");
    assert_eq!(view.params["canApprove"], "true");
    // userPrivateData went to the clicker only.
    let other = h.sim.cards_for_user("staff0815");
    assert_eq!(other[0].params["status"], "approved");
    assert!(!other[0].params.contains_key("myAction"));

    let click = clicks.lock().unwrap()[0].clone();
    assert_eq!(click.out_track_id, "t-click");
    assert_eq!(click.user_id, "manager4711");
    assert_eq!(click.corp_id, SEED_CORP_ID);
    assert_eq!(click.callback_type, "actionCallback");
    assert_eq!((click.space_type.as_deref(), click.space_id.as_deref()), (Some("IM"), Some(OPS_GROUP)));
    assert_eq!(click.action_ids, ["approve"]);
    assert_eq!(click.param("comment").as_deref(), Some("OK within budget"));
    let last = h.sim.card("t-click").unwrap().history.pop().unwrap();
    assert_eq!((last.source, last.user_id.as_deref()), ("callback", Some("manager4711")));

    // Who may click: group members (and recipients, when set) only.
    let err = h.sim.click("t-click", "sales0101", "approve", Value::Null).await.unwrap_err();
    assert!(matches!(err, ClickError::NotVisible { .. }), "{err}");
    assert!(matches!(h.sim.click("t-nope", "manager4711", "a", Value::Null).await, Err(ClickError::UnknownCard(_))));
    assert!(matches!(h.sim.click("t-click", "ghost", "a", Value::Null).await, Err(ClickError::UnknownUser(_))));
    assert!(matches!(h.sim.click("t-click", "manager4711", "a", json!([1])).await, Err(ClickError::BadParams)));
    assert_eq!(clicks.lock().unwrap().len(), 1, "refused clicks never reach the subscriber");
}

#[tokio::test]
async fn click_errors_from_the_route_and_the_answer() {
    let h = harness().await;
    // A Stream card in a simulator without a Stream gateway: the callback cannot be delivered.
    h.client.create_and_deliver(&group_card("t-stream")).await.unwrap();
    let err = h.sim.click("t-stream", "manager4711", "approve", Value::Null).await.unwrap_err();
    assert!(matches!(err, ClickError::Callback(_)), "{err}");

    // A subscriber that breaks the string rule.
    let (url, _) = subscriber(json!({"response": {"cardData": {"cardParamMap": {"amount": 5}}}})).await;
    h.client.register_callback("bad", &url, &"s".to_owned().into()).await.unwrap();
    let card = CardInstance::to_robot_chat(TEMPLATE, "t-robot", "staff0815", SEED_APP_KEY, params("pending"))
        .with_http_callback("bad");
    h.client.create_and_deliver(&card).await.unwrap();
    let err = h.sim.click("t-robot", "staff0815", "approve", Value::Null).await.unwrap_err();
    assert!(matches!(err, ClickError::BadUpdate(_)), "{err}");
    assert_eq!(h.sim.card("t-robot").unwrap().card_data["status"], "pending", "nothing applied");
    assert!(matches!(
        h.sim.click("t-robot", "manager4711", "approve", Value::Null).await,
        Err(ClickError::NotVisible { .. })
    ));

    // A card without a callback route.
    let mut silent = CardInstance::to_group(TEMPLATE, "t-silent", OPS_GROUP, SEED_APP_KEY, params("x"));
    silent.callback_type = None;
    h.client.create_and_deliver(&silent).await.unwrap();
    assert!(matches!(h.sim.click("t-silent", "boss0001", "a", Value::Null).await, Err(ClickError::NoCallback(_))));
}

#[tokio::test]
async fn the_client_accepts_an_already_exists_answer() {
    // A stand-in for a DingTalk that answers a repeated create with an error code.
    let clock = Arc::new(ManualClock(AtomicI64::new(1_767_225_600_000)));
    let org = Org::seeded(clock.clone());
    let exists = Router::new().route(
        "/v1.0/card/instances/createAndDeliver",
        post(|| async { CardApiError::new("param.outTrackIdExist", "outTrackId already exists").into_response() }),
    );
    let url = serve(org.router().merge(exists)).await;
    let credentials = AppCredentials {
        app_key: SEED_APP_KEY.to_owned(),
        app_secret: SEED_APP_SECRET.to_owned().into(),
        agent_id: None,
        corp_id: None,
    };
    let client = CardsClient::new(OpenApi::new(credentials, OpenApiSettings::with_base(&url), clock).unwrap());
    let result = client.create_and_deliver(&group_card("t-dup")).await.unwrap();
    assert!(result.already_existed);
    assert_eq!(result.out_track_id, "t-dup");
}

#[tokio::test]
async fn reset_forgets_cards() {
    let h = harness().await;
    h.client.create_and_deliver(&group_card("t-reset")).await.unwrap();
    h.sim.reset();
    assert!(h.sim.cards().is_empty());
    assert!(h.sim.card("t-reset").is_none());
}

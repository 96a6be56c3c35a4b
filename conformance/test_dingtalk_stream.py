"""DingTalk's official Stream SDK (`dingtalk-stream`), unmodified, against the DingTalk simulator:
registration, the WebSocket, an approval EVENT, a card-action CALLBACK whose ACK updates the card,
a robot-message CALLBACK answered through its `sessionWebhook`, SYSTEM ping and disconnect; every
frame and every ACK the SDK sends is read back from the simulator's journal (`/_sim/requests`).

Redirected through the SDK's own `DINGTALK_OPENAPI_ENDPOINT` environment variable (read by
`dingtalk_stream.utils` when it is imported, so it is set before the import); the WebSocket URL is
the `endpoint` the simulator answers at registration."""

import asyncio
import json
import os
import queue
import threading
import time

import pytest
import requests

import conftest

try:
    _SIM_BASE = conftest.simulator("dingtalk").base
except RuntimeError:  # collected outside conformance/run: nothing to point the SDK at
    _SIM_BASE = None
if _SIM_BASE:
    os.environ["DINGTALK_OPENAPI_ENDPOINT"] = _SIM_BASE

import dingtalk_stream  # noqa: E402
from dingtalk_stream import AckMessage  # noqa: E402

pytestmark = pytest.mark.skipif(_SIM_BASE is None, reason="run with conformance/run")

WAIT_S = 15


def fixture_json(fixtures, *parts) -> dict:
    return json.loads((fixtures / "dingtalk").joinpath(*parts).read_text())


class Events(dingtalk_stream.EventHandler):
    def __init__(self):
        super().__init__()
        self.seen = queue.Queue()

    async def process(self, event: dingtalk_stream.EventMessage):
        self.seen.put(event)
        return AckMessage.STATUS_OK, "OK"


class CardActions(dingtalk_stream.CallbackHandler):
    """Answers a click with the card update the ACK carries (reference §4.2)."""

    def __init__(self):
        super().__init__()
        self.seen = queue.Queue()

    async def process(self, message: dingtalk_stream.CallbackMessage):
        click = dingtalk_stream.CardCallbackMessage.from_dict(message.data)
        self.seen.put(click)
        params = click.content.get("cardPrivateData", {}).get("params", {})
        decision = params.get("decision", "clicked")
        return AckMessage.STATUS_OK, {
            "cardData": {"cardParamMap": {"status": decision, "decidedBy": click.user_id}},
            "cardUpdateOptions": {"updateCardDataByKey": True, "updatePrivateDataByKey": True},
        }


class Robot(dingtalk_stream.ChatbotHandler):
    """Replies to every message through the message's sessionWebhook (the SDK's reply_text)."""

    def __init__(self):
        super().__init__()
        self.seen = queue.Queue()

    async def process(self, callback: dingtalk_stream.CallbackMessage):
        incoming = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
        self.reply_text(f"echo: {incoming.text.content.strip()}", incoming)
        self.seen.put(incoming)
        return AckMessage.STATUS_OK, "OK"


class RunningClient:
    """The SDK's `start()` loop on its own thread and event loop, stopped cleanly at teardown."""

    def __init__(self, client):
        self.client = client
        self.loop = asyncio.new_event_loop()
        self.stopping = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self):
        self.stopping = asyncio.Event()
        main = asyncio.create_task(self.client.start())
        await self.stopping.wait()
        # start() swallows one CancelledError (it sleeps and reconnects), so cancel until it ends.
        while not main.done():
            main.cancel()
            await asyncio.sleep(0.05)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(main, *others, return_exceptions=True)

    def stop(self):
        while self.stopping is None:
            time.sleep(0.01)
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=10)


def wait_for(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stream_info(dingtalk, app_key):
    return dingtalk.info()["stream"]["apps"].get(app_key, {"connections": 0, "pending_events": 0})


def frames(dingtalk, method: str) -> list:
    out = []
    for entry in dingtalk.requests("/connect"):
        if entry["method"] == method:
            body = entry["body"]
            out.append(json.loads(body) if isinstance(body, str) else body)
    return out


def ops_group(dingtalk) -> str:
    """The seeded `ops` group (manager4711, staff0815 and the boss are members)."""
    return next(g["open_conversation_id"] for g in dingtalk.info()["org"]["groups"] if g["title"] == "ops")


def incoming_topic() -> str:
    return dingtalk_stream.ChatbotMessage.TOPIC


def frames_ack(dingtalk, frame: dict):
    """The ACK the SDK sent for `frame`, if it has arrived."""
    return {f["headers"]["messageId"]: f for f in frames(dingtalk, "WS-RECV")}.get(frame["headers"]["messageId"])


@pytest.fixture(scope="module")
def app(dingtalk):
    return dingtalk.info()["org"]["apps"][0]


@pytest.fixture(scope="module")
def handlers():
    return {"events": Events(), "cards": CardActions(), "robot": Robot()}


@pytest.fixture(scope="module")
def stream(dingtalk, app, handlers):
    assert dingtalk_stream.DingTalkStreamClient.OPEN_CONNECTION_API == (
        _SIM_BASE + "/v1.0/gateway/connections/open"
    ), "dingtalk_stream was imported before DINGTALK_OPENAPI_ENDPOINT was set"
    client = dingtalk_stream.DingTalkStreamClient(dingtalk_stream.Credential(app["app_key"], app["app_secret"]))
    client.register_all_event_handler(handlers["events"])
    client.register_callback_handler(dingtalk_stream.Card_Callback_Router_Topic, handlers["cards"])
    client.register_callback_handler(dingtalk_stream.ChatbotMessage.TOPIC, handlers["robot"])
    running = RunningClient(client)
    wait_for(lambda: stream_info(dingtalk, app["app_key"])["connections"] == 1, "the SDK's connection")
    yield running
    running.stop()


def test_registration_is_what_the_sdk_sends(dingtalk, app, stream, fixtures):
    capture = fixture_json(fixtures, "stream", "connections_open.json")
    expected = capture["request_python_sdk"]["body"]
    [registration] = dingtalk.requests("/v1.0/gateway/connections/open")[:1]
    assert registration["status"] == 200
    body = json.loads(registration["body"]) if isinstance(registration["body"], str) else registration["body"]
    assert set(body) == set(expected)
    assert body["clientId"] == app["app_key"]
    key = lambda s: (s["type"], s["topic"])  # noqa: E731
    assert sorted(body["subscriptions"], key=key) == sorted(expected["subscriptions"], key=key)
    assert dingtalk.info()["stream"]["tickets_issued"] >= 1
    # What the gateway answers: the fixture's shape, a ticket for one connection.
    answer = requests.post(
        dingtalk.url("/v1.0/gateway/connections/open"),
        json={
            "clientId": app["app_key"],
            "clientSecret": app["app_secret"],
            "subscriptions": expected["subscriptions"],
        },
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200 and set(answer.json()) == set(capture["response_200"])
    assert answer.json()["endpoint"].endswith("/connect")


def test_registration_with_bad_secret_is_refused(dingtalk, app):
    answer = requests.post(
        dingtalk.url("/v1.0/gateway/connections/open"),
        json={"clientId": app["app_key"], "clientSecret": "wrong", "subscriptions": []},
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalidClientIdOrSecret"


def test_ping_is_echoed(dingtalk, app, stream, fixtures):
    before = dingtalk.info()["stream"]["pings"]
    answer = requests.post(dingtalk.url("/_sim/actions/stream_ping"), json={"appKey": app["app_key"]}, timeout=10)
    assert answer.status_code == 200 and answer.json()["pinged"] == 1
    wait_for(lambda: dingtalk.info()["stream"]["pings"]["answered"] > before["answered"], "the ping's ACK")
    assert dingtalk.info()["stream"]["pings"]["mismatched"] == 0
    sent = [f for f in frames(dingtalk, "WS-SEND") if f.get("headers", {}).get("topic") == "ping"]
    acks = {f["headers"]["messageId"]: f for f in frames(dingtalk, "WS-RECV")}
    ping = sent[-1]
    ack = acks[ping["headers"]["messageId"]]
    expected = fixture_json(fixtures, "stream", "01_system_ping.json")["ack_from_official_python_sdk"]
    assert set(ack) == set(expected)
    assert ack["code"] == 200 and json.loads(ack["data"]) == json.loads(ping["data"])


def test_approval_event_arrives_and_is_acked(dingtalk, app, stream, handlers, fixtures):
    # Start an approval (the operator's own tool would use the OpenAPI; here the control API is
    # enough: the event is what is under test) and let the approver agree on the page.
    token = requests.post(
        dingtalk.url("/v1.0/oauth2/accessToken"),
        json={"appKey": app["app_key"], "appSecret": app["app_secret"]},
        timeout=10,
    ).json()["accessToken"]
    started = requests.post(
        dingtalk.url("/v1.0/workflow/processInstances"),
        headers={"x-acs-dingtalk-access-token": token},
        json={
            "originatorUserId": "staff0815",
            "processCode": "PROC-DB-PURCHASE-REQ",
            "formComponentValues": [
                {"name": "PO Number", "value": "PO-STREAM-1"},
                {"name": "Amount (HKD)", "value": "900"},
            ],
        },
        timeout=10,
    )
    assert started.status_code == 200, started.text
    instance_id = started.json()["instanceId"]
    events = handlers["events"].seen
    first = events.get(timeout=WAIT_S)
    assert first.headers.event_type in ("bpms_instance_change", "bpms_task_change")
    # Drain everything about this instance until the approver can act, then approve on the page.
    instance = requests.get(
        dingtalk.url("/v1.0/workflow/processInstances"),
        headers={"x-acs-dingtalk-access-token": token},
        params={"processInstanceId": instance_id},
        timeout=10,
    ).json()["result"]
    while instance["status"] == "RUNNING":
        task = next(t for t in instance["tasks"] if t["status"] == "RUNNING")
        decided = requests.post(
            dingtalk.url("/_sim/actions/approve"),
            json={"processInstanceId": instance_id, "taskId": task["taskId"], "userId": task["userId"],
                  "remark": "fine"},
            timeout=10,
        )
        assert decided.status_code == 200, decided.text
        instance = requests.get(
            dingtalk.url("/v1.0/workflow/processInstances"),
            headers={"x-acs-dingtalk-access-token": token},
            params={"processInstanceId": instance_id},
            timeout=10,
        ).json()["result"]
    finish = None
    deadline = time.monotonic() + WAIT_S
    while finish is None and time.monotonic() < deadline:
        event = events.get(timeout=WAIT_S)
        if event.headers.event_type == "bpms_instance_change" and event.data.get("type") == "finish":
            finish = event
    assert finish is not None
    expected = fixture_json(fixtures, "events", "stream_data_bpms_instance_change_finish.json")
    expected_keys = {k for k in expected if not k.startswith("_")}
    assert expected_keys <= set(finish.data), expected_keys - set(finish.data)
    assert finish.data["processInstanceId"] == instance_id and finish.data["result"] == "agree"
    assert finish.headers.event_id == finish.data["eventId"]
    assert finish.headers.event_corp_id == dingtalk.info()["org"]["corp_id"]

    # The SDK ACKs every event as the fixture recorded: code 200, the event data echoed, no
    # `status`. Reference §7.4 / §11 (5): an EVENT ACK without `status` does not settle the
    # event, so the simulator counts it as invalid and keeps the event for redelivery (whether
    # DingTalk's gateway accepts code 200 alone is UNVERIFIED; see UNVERIFIED-dingtalk.md).
    acks = wait_for(
        lambda: {f["headers"]["messageId"]: f for f in frames(dingtalk, "WS-RECV")}.get(finish.headers.message_id),
        "the SDK's ACK of the finish event",
    )
    capture = fixture_json(fixtures, "stream", "02_event_bpms_instance_change.json")
    expected_ack = capture["ack_from_official_python_sdk"]
    assert set(acks) == set(expected_ack) and set(acks["headers"]) == set(expected_ack["headers"])
    assert acks["code"] == 200 and json.loads(acks["data"])["processInstanceId"] == instance_id
    assert "status" not in json.loads(acks["data"])
    info = dingtalk.info()["stream"]
    assert info["invalid_acks"] >= 1
    assert stream_info(dingtalk, app["app_key"])["pending_events"] >= 1


def test_card_click_comes_back_and_the_ack_updates_the_card(dingtalk, app, stream, handlers, fixtures):
    token = requests.post(
        dingtalk.url("/v1.0/oauth2/accessToken"),
        json={"appKey": app["app_key"], "appSecret": app["app_secret"]},
        timeout=10,
    ).json()["accessToken"]
    group = ops_group(dingtalk)
    out_track_id = "conformance-stream-card-1"
    created = requests.post(
        dingtalk.url("/v1.0/card/instances/createAndDeliver"),
        headers={"x-acs-dingtalk-access-token": token},
        json={
            "cardTemplateId": "00000000-0000-4000-8000-000000000abc.schema",
            "outTrackId": out_track_id,
            "callbackType": "STREAM",
            "cardData": {"cardParamMap": {"title": "PO-STREAM-2", "status": "pending"}},
            "openSpaceId": f"dtv1.card//IM_GROUP.{group}",
            "imGroupOpenSpaceModel": {"supportForward": False},
            "imGroupOpenDeliverModel": {"robotCode": app["robot_code"], "recipients": ["manager4711"]},
            "userIdType": 1,
        },
        timeout=10,
    )
    assert created.status_code == 200, created.text
    clicked = requests.post(
        dingtalk.url("/_sim/actions/card_click"),
        json={"outTrackId": out_track_id, "userId": "manager4711", "actionId": "approve",
              "params": {"decision": "approved"}},
        timeout=20,
    )
    assert clicked.status_code == 200, clicked.text
    click = handlers["cards"].seen.get(timeout=WAIT_S)
    assert click.card_instance_id == out_track_id and click.user_id == "manager4711"
    assert click.content["cardPrivateData"]["actionIds"] == ["approve"]
    assert click.corp_id == dingtalk.info()["org"]["corp_id"]
    # The ACK's response was applied: the card shows what the handler answered.
    card = json.dumps(clicked.json()["card"], ensure_ascii=False)
    assert "approved" in card and "manager4711" in card
    acks = [f for f in frames(dingtalk, "WS-RECV") if "cardData" in f.get("data", "")]
    expected = fixture_json(fixtures, "stream", "04_callback_card_action.json")["ack_from_official_python_sdk"]
    assert acks and set(acks[-1]) == set(expected)
    assert json.loads(acks[-1]["data"])["response"]["cardData"]["cardParamMap"]["status"] == "approved"


def test_robot_message_and_reply_through_session_webhook(dingtalk, app, stream, handlers, fixtures):
    sent = requests.post(
        dingtalk.url("/_sim/actions/send_message"),
        json={"userId": "manager4711", "text": "stock PO-2024-0042"},
        timeout=20,
    )
    assert sent.status_code == 200, sent.text
    incoming = handlers["robot"].seen.get(timeout=WAIT_S)
    assert incoming.sender_staff_id == "manager4711"
    assert incoming.text.content.strip() == "stock PO-2024-0042"
    assert incoming.conversation_type == "1"
    expected = fixture_json(fixtures, "events", "robot_message_text_single.json")
    expected_keys = {k for k in expected if not k.startswith("_")}
    assert expected_keys <= set(sent.json()["data"]), expected_keys - set(sent.json()["data"])
    # The SDK ACKed the callback as the fixture recorded: {"response": "OK"}.
    robot_frames = [f for f in frames(dingtalk, "WS-SEND") if f.get("headers", {}).get("topic") == incoming_topic()]
    ack = wait_for(lambda: frames_ack(dingtalk, robot_frames[-1]), "the robot callback's ACK")
    expected_ack = fixture_json(fixtures, "stream", "03_callback_robot_message.json")["ack_from_official_python_sdk"]
    assert ack["code"] == expected_ack["code"] and json.loads(ack["data"]) == json.loads(expected_ack["data"])
    # The SDK's reply_text went to the sessionWebhook and the user sees it in the robot chat.
    replies = wait_for(lambda: dingtalk.requests("/robot/sendBySession"), "the reply through sessionWebhook")
    assert replies[-1]["status"] == 200
    view = requests.get(dingtalk.url("/_sim/ui/api/view"), params={"user": "manager4711"}, timeout=10).json()
    assert "echo: stock PO-2024-0042" in json.dumps(view, ensure_ascii=False)


def test_disconnect_makes_the_sdk_reconnect(dingtalk, app, stream, fixtures):
    tickets = dingtalk.info()["stream"]["tickets_issued"]
    answer = requests.post(
        dingtalk.url("/_sim/actions/stream_disconnect"), json={"appKey": app["app_key"]}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    wait_for(lambda: dingtalk.info()["stream"]["tickets_issued"] > tickets, "a new registration")
    wait_for(lambda: stream_info(dingtalk, app["app_key"])["connections"] == 1, "one live connection")
    disconnects = [f for f in frames(dingtalk, "WS-SEND") if f.get("headers", {}).get("topic") == "disconnect"]
    assert disconnects
    expected = fixture_json(fixtures, "stream", "05_system_disconnect.json")["server_frame"]
    assert set(disconnects[-1]) == set(expected) and set(disconnects[-1]["headers"]) >= set(expected["headers"])
    # The new connection works: a ping is answered.
    pinged = requests.post(dingtalk.url("/_sim/actions/stream_ping"), json={"appKey": app["app_key"]}, timeout=10)
    assert pinged.status_code == 200 and pinged.json()["pinged"] == 1

"""Alibaba's official DingTalk OpenAPI SDK (`alibabacloud-dingtalk`), unmodified, against the
DingTalk simulator: new-API access token, robot 1:1 batch send and group send, interactive cards
create/deliver and update, approval start/get/execute/list, contacts search; and the refusals the
real service gives (bad token, missing token, unknown user, bad parameters, QPS), which the SDK
turns into `TeaException` with DingTalk's `code`.

Redirected through the SDK's documented `Config(protocol='http', endpoint='host:port')`."""

import concurrent.futures
import http.server
import json
import threading
import time

import pytest
import requests
from alibabacloud_dingtalk.card_1_0 import client as card_client
from alibabacloud_dingtalk.card_1_0 import models as card_models
from alibabacloud_dingtalk.contact_1_0 import client as contact_client
from alibabacloud_dingtalk.contact_1_0 import models as contact_models
from alibabacloud_dingtalk.oauth2_1_0 import client as oauth2_client
from alibabacloud_dingtalk.oauth2_1_0 import models as oauth2_models
from alibabacloud_dingtalk.robot_1_0 import client as robot_client
from alibabacloud_dingtalk.robot_1_0 import models as robot_models
from alibabacloud_dingtalk.workflow_1_0 import client as workflow_client
from alibabacloud_dingtalk.workflow_1_0 import models as workflow_models
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_util import models as util_models
from Tea.exceptions import TeaException

PURCHASE_REQ = "PROC-DB-PURCHASE-REQ"


def examples(fixtures) -> dict:
    return json.loads((fixtures / "dingtalk" / "openapi" / "response_examples.json").read_text())


def wire_requests(fixtures) -> list:
    return json.loads((fixtures / "dingtalk" / "openapi" / "sdk_wire_requests.json").read_text())["requests"]


def ops_group(dingtalk) -> str:
    """The seeded `ops` group (manager4711, staff0815 and the boss are members)."""
    return next(g["open_conversation_id"] for g in dingtalk.info()["org"]["groups"] if g["title"] == "ops")


@pytest.fixture(scope="module")
def config(dingtalk):
    return open_api_models.Config(protocol="http", endpoint=dingtalk.host_port)


@pytest.fixture(scope="module")
def app(dingtalk):
    return dingtalk.info()["org"]["apps"][0]


@pytest.fixture(scope="module")
def token(config, app):
    client = oauth2_client.Client(config)
    answer = client.get_access_token(
        oauth2_models.GetAccessTokenRequest(app_key=app["app_key"], app_secret=app["app_secret"])
    )
    return answer.body.access_token


def runtime():
    return util_models.RuntimeOptions()


def raises_code(call, code: str, status: int) -> TeaException:
    with pytest.raises(TeaException) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    assert caught.value.data["statusCode"] == status
    return caught.value


# ---------------------------------------------------------------------------- tokens (§1)


def test_access_token_is_reused_while_valid(config, app, fixtures):
    client = oauth2_client.Client(config)
    request = oauth2_models.GetAccessTokenRequest(app_key=app["app_key"], app_secret=app["app_secret"])
    first = client.get_access_token(request)
    second = client.get_access_token(request)
    assert first.status_code == 200
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["accessToken_ok"]["body"]
    assert set(first.body.to_map()) == set(expected)
    assert first.body.expire_in == 7200
    assert first.body.access_token and second.body.access_token == first.body.access_token


def test_access_token_bad_secret_is_invalid_client(config, app, fixtures):
    client = oauth2_client.Client(config)
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["accessToken_bad_secret"]
    err = raises_code(
        lambda: client.get_access_token(
            oauth2_models.GetAccessTokenRequest(app_key=app["app_key"], app_secret="not-the-secret")
        ),
        expected["body"]["code"],
        expected["status"],
    )
    assert expected["body"]["message"] in err.message


def test_old_gettoken_is_the_same_token(dingtalk, app, token, fixtures):
    # The old API has no client in this SDK; operators call it with plain HTTP (§1.2).
    old = examples(fixtures)["old_api_oapi_dingtalk_com"]
    answer = requests.get(
        dingtalk.url("/gettoken"), params={"appkey": app["app_key"], "appsecret": app["app_secret"]}, timeout=10
    ).json()
    assert set(answer) == set(old["gettoken_ok"]["body"])
    assert answer["errcode"] == 0 and answer["expires_in"] == 7200
    assert answer["access_token"] == token
    bad = requests.get(
        dingtalk.url("/gettoken"), params={"appkey": app["app_key"], "appsecret": "nope"}, timeout=10
    ).json()
    assert bad == old["gettoken_bad_secret"]["body"]
    missing = requests.get(dingtalk.url("/gettoken"), timeout=10).json()
    assert missing == old["gettoken_missing_param"]["body"]


# ---------------------------------------------------------------------------- robot (§3.2)


def robot_headers(token):
    return robot_models.BatchSendOTOHeaders(x_acs_dingtalk_access_token=token)


def test_robot_batch_send_oto(config, app, token, fixtures, dingtalk):
    client = robot_client.Client(config)
    request = robot_models.BatchSendOTORequest(
        robot_code=app["robot_code"],
        user_ids=["manager4711", "staff0815", "nobody0000"],
        msg_key="sampleMarkdown",
        msg_param=json.dumps({"title": "PO-2024-0042 approved", "text": "### PO-2024-0042\n- **approved**"}),
    )
    answer = client.batch_send_otowith_options(request, robot_headers(token), runtime())
    assert answer.status_code == 200
    assert answer.body.process_query_key
    assert answer.body.invalid_staff_id_list == ["nobody0000"]
    assert answer.body.flow_controlled_staff_id_list == []
    # What the SDK sent is what the fixture says it sends (token in the header, msgParam a string).
    sent = dingtalk.requests("/v1.0/robot/oToMessages/batchSend")[-1]
    assert {k.lower(): v for k, v in sent["headers"].items()}["x-acs-dingtalk-access-token"] == token
    body = json.loads(sent["body"]) if isinstance(sent["body"], str) else sent["body"]
    assert isinstance(body["msgParam"], str)

    # The message reached the user's 1:1 chat with the robot (state visible on re-read).
    view = requests.get(dingtalk.url("/_sim/ui/api/view"), params={"user": "staff0815"}, timeout=10).json()
    assert "PO-2024-0042" in json.dumps(view, ensure_ascii=False)


def test_robot_batch_send_flow_control(config, app, token, dingtalk):
    dingtalk.put_record("flow_controlled", {"userids": ["staff0815"]})
    client = robot_client.Client(config)
    request = robot_models.BatchSendOTORequest(
        robot_code=app["robot_code"],
        user_ids=["manager4711", "staff0815"],
        msg_key="sampleText",
        msg_param=json.dumps({"content": "stock alert"}),
    )
    answer = client.batch_send_otowith_options(request, robot_headers(token), runtime())
    assert answer.body.flow_controlled_staff_id_list == ["staff0815"]
    dingtalk.put_record("flow_controlled", {"userids": []})


def test_robot_batch_send_refusals(config, app, token):
    client = robot_client.Client(config)

    def send(**fields):
        base = dict(
            robot_code=app["robot_code"],
            user_ids=["manager4711"],
            msg_key="sampleText",
            msg_param=json.dumps({"content": "x"}),
        )
        base.update(fields)
        return client.batch_send_otowith_options(
            robot_models.BatchSendOTORequest(**base), robot_headers(token), runtime()
        )

    too_many = [f"user{i:04d}" for i in range(21)]
    for bad in [
        dict(user_ids=too_many),
        dict(msg_param="not json"),
        dict(msg_key="sampleNoSuchKey"),
        dict(robot_code="dingnosuchrobot"),
    ]:
        with pytest.raises(TeaException) as caught:
            send(**bad)
        assert caught.value.data["statusCode"] == 400, bad
        assert caught.value.code, bad


def test_robot_group_send(config, app, token, dingtalk):
    group = {"open_conversation_id": ops_group(dingtalk)}
    client = robot_client.Client(config)
    request = robot_models.OrgGroupSendRequest(
        robot_code=app["robot_code"],
        open_conversation_id=group["open_conversation_id"],
        msg_key="sampleText",
        msg_param=json.dumps({"content": "New opportunity: ACME HK Ltd, est. HK$250,000"}),
    )
    answer = client.org_group_send_with_options(
        request, robot_models.OrgGroupSendHeaders(x_acs_dingtalk_access_token=token), runtime()
    )
    assert answer.status_code == 200 and answer.body.process_query_key
    request.open_conversation_id = "cidNoSuchGroup0000=="
    with pytest.raises(TeaException) as caught:
        client.org_group_send_with_options(
            request, robot_models.OrgGroupSendHeaders(x_acs_dingtalk_access_token=token), runtime()
        )
    assert caught.value.data["statusCode"] == 400


# ---------------------------------------------------------------------------- cards (§4)


def create_and_deliver(
    config, app, token, group_cid, out_track_id, card_template_id_suffix="", callback_type_override="STREAM", **extra
):
    client = card_client.Client(config)
    request = card_models.CreateAndDeliverRequest(
        card_template_id=f"00000000-0000-4000-8000-000000000abc{card_template_id_suffix}.schema",
        out_track_id=out_track_id,
        callback_type=callback_type_override,
        card_data=card_models.CreateAndDeliverRequestCardData(
            card_param_map={"title": "Purchase Request PO-2024-0042", "amount": "HK$12,800", "status": "pending"}
        ),
        private_data={
            "manager4711": card_models.PrivateDataValue(card_param_map={"canApprove": "true"}),
        },
        open_space_id=f"dtv1.card//IM_GROUP.{group_cid}",
        im_group_open_space_model=card_models.CreateAndDeliverRequestImGroupOpenSpaceModel(support_forward=False),
        im_group_open_deliver_model=card_models.CreateAndDeliverRequestImGroupOpenDeliverModel(
            robot_code=app["robot_code"], at_user_ids={"manager4711": "Manager"}, recipients=["manager4711"]
        ),
        user_id_type=1,
        **extra,
    )
    return client.create_and_deliver_with_options(
        request, card_models.CreateAndDeliverHeaders(x_acs_dingtalk_access_token=token), runtime()
    )


def card_state(dingtalk, user: str, out_track_id: str) -> dict:
    view = requests.get(dingtalk.url("/_sim/ui/api/view"), params={"user": user}, timeout=10).json()
    text = json.dumps(view, ensure_ascii=False)
    assert out_track_id in text, view
    return view


def test_card_create_deliver_and_update(config, app, token, dingtalk, fixtures):
    group = ops_group(dingtalk)
    out_track_id = "conformance-card-PO-2024-0042-v1"
    answer = create_and_deliver(config, app, token, group, out_track_id)
    assert answer.status_code == 200
    assert answer.body.success is True
    assert answer.body.result.out_track_id == out_track_id
    [delivered] = answer.body.result.deliver_results
    assert delivered.space_type == "IM_GROUP" and delivered.space_id == group and delivered.success is True
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["card_createAndDeliver_ok"]["body"]
    assert set(answer.body.to_map()) == set(expected)
    assert set(answer.body.result.deliver_results[0].to_map()) == set(expected["result"]["deliverResults"][0])

    client = card_client.Client(config)
    update = card_models.UpdateCardRequest(
        out_track_id=out_track_id,
        card_data=card_models.UpdateCardRequestCardData(card_param_map={"status": "approved"}),
        card_update_options=card_models.UpdateCardRequestCardUpdateOptions(
            update_card_data_by_key=True, update_private_data_by_key=True
        ),
        user_id_type=1,
    )
    updated = client.update_card_with_options(
        update, card_models.UpdateCardHeaders(x_acs_dingtalk_access_token=token), runtime()
    )
    assert updated.body.success is True and updated.body.result is True
    # The update merged by key: status changed, the other fields kept.
    view = json.dumps(card_state(dingtalk, "manager4711", out_track_id), ensure_ascii=False)
    assert "approved" in view and "HK$12,800" in view

    # outTrackId is the idempotency key: the same create again answers the same and makes no
    # second card; the same id with other content is a conflict.
    again = create_and_deliver(config, app, token, group, out_track_id)
    assert again.body.result.out_track_id == out_track_id
    view = card_state(dingtalk, "manager4711", out_track_id)
    assert json.dumps(view).count(f'"out_track_id": "{out_track_id}"') == 1
    raises_code(
        lambda: create_and_deliver(config, app, token, group, out_track_id, card_template_id_suffix="-other"),
        "param.outTrackIdConflict",
        400,
    )


def test_card_create_then_deliver_to_robot_chat(config, app, token, dingtalk):
    client = card_client.Client(config)
    out_track_id = "conformance-card-2step-1"
    created = client.create_card_with_options(
        card_models.CreateCardRequest(
            card_template_id="00000000-0000-4000-8000-000000000abc.schema",
            out_track_id=out_track_id,
            callback_type="STREAM",
            card_data=card_models.CreateCardRequestCardData(card_param_map={"title": "Stock low", "status": "open"}),
            im_robot_open_space_model=card_models.CreateCardRequestImRobotOpenSpaceModel(support_forward=True),
            user_id_type=1,
        ),
        card_models.CreateCardHeaders(x_acs_dingtalk_access_token=token),
        runtime(),
    )
    assert created.body.success is True
    delivered = client.deliver_card_with_options(
        card_models.DeliverCardRequest(
            out_track_id=out_track_id,
            open_space_id="dtv1.card//IM_ROBOT.staff0815",
            im_robot_open_deliver_model=card_models.DeliverCardRequestImRobotOpenDeliverModel(
                space_type="IM_ROBOT", robot_code=app["robot_code"]
            ),
            user_id_type=1,
        ),
        card_models.DeliverCardHeaders(x_acs_dingtalk_access_token=token),
        runtime(),
    )
    assert delivered.body.success is True
    [result] = delivered.body.result
    assert result.space_type == "IM_ROBOT" and result.space_id == "staff0815" and result.success is True
    card_state(dingtalk, "staff0815", out_track_id)


def test_card_refusals(config, app, token, dingtalk):
    group = ops_group(dingtalk)
    client = card_client.Client(config)
    headers = card_models.CreateAndDeliverHeaders(x_acs_dingtalk_access_token=token)
    empty_template = card_models.CreateAndDeliverRequest(
        out_track_id="conformance-empty-template",
        card_data=card_models.CreateAndDeliverRequestCardData(card_param_map={}),
        open_space_id=f"dtv1.card//IM_GROUP.{group}",
        im_group_open_space_model=card_models.CreateAndDeliverRequestImGroupOpenSpaceModel(),
        im_group_open_deliver_model=card_models.CreateAndDeliverRequestImGroupOpenDeliverModel(
            robot_code=app["robot_code"]
        ),
    )
    raises_code(
        lambda: client.create_and_deliver_with_options(empty_template, headers, runtime()),
        "param.cardTemplateIdEmpty",
        400,
    )
    unknown = card_models.UpdateCardRequest(
        out_track_id="conformance-never-created",
        card_data=card_models.UpdateCardRequestCardData(card_param_map={"status": "x"}),
    )
    with pytest.raises(TeaException) as caught:
        client.update_card_with_options(
            unknown, card_models.UpdateCardHeaders(x_acs_dingtalk_access_token=token), runtime()
        )
    assert caught.value.data["statusCode"] == 400


# ---------------------------------------------------------------------------- workflow (§5)


def wf_headers(cls, token):
    return cls(x_acs_dingtalk_access_token=token)


def start_purchase(config, token, po: str, originator="staff0815"):
    client = workflow_client.Client(config)
    request = workflow_models.StartProcessInstanceRequest(
        originator_user_id=originator,
        process_code=PURCHASE_REQ,
        dept_id=20001,
        form_component_values=[
            workflow_models.StartProcessInstanceRequestFormComponentValues(name="PO Number", value=po),
            workflow_models.StartProcessInstanceRequestFormComponentValues(name="Amount (HKD)", value="12800"),
            workflow_models.StartProcessInstanceRequestFormComponentValues(
                name="Items",
                component_type="TableField",
                value=json.dumps([[{"name": "Item", "value": "Laptop"}, {"name": "Qty", "value": "2"}]]),
            ),
        ],
    )
    return client.start_process_instance_with_options(
        request, wf_headers(workflow_models.StartProcessInstanceHeaders, token), runtime()
    )


def get_instance(config, token, instance_id):
    client = workflow_client.Client(config)
    return client.get_process_instance_with_options(
        workflow_models.GetProcessInstanceRequest(process_instance_id=instance_id),
        wf_headers(workflow_models.GetProcessInstanceHeaders, token),
        runtime(),
    )


def test_workflow_schema(config, token):
    client = workflow_client.Client(config)
    answer = client.query_schema_by_process_code_with_options(
        workflow_models.QuerySchemaByProcessCodeRequest(process_code=PURCHASE_REQ),
        wf_headers(workflow_models.QuerySchemaByProcessCodeHeaders, token),
        runtime(),
    )
    labels = [item.props.label for item in answer.body.result.schema_content.items]
    assert "PO Number" in labels and "Amount (HKD)" in labels


def test_workflow_start_get_execute(config, token, fixtures):
    started = start_purchase(config, token, "PO-CONF-0001")
    instance_id = started.body.instance_id
    assert instance_id
    got = get_instance(config, token, instance_id)
    result = got.body.result
    assert result.status == "RUNNING" and result.originator_user_id == "staff0815"
    values = {v.name: v.value for v in result.form_component_values}
    assert values["PO Number"] == "PO-CONF-0001" and values["Amount (HKD)"] == "12800"
    running = [t for t in result.tasks if t.status == "RUNNING"]
    assert running, result.to_map()
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["workflow_get_ok"]["body"]["result"]
    # A running instance has no finishTime yet; every other field of the fixture is there.
    assert set(expected) - {"finishTime"} <= set(result.to_map()), set(expected) - set(result.to_map())

    client = workflow_client.Client(config)
    # Acting on someone else's task is refused; the instance stays RUNNING.
    task = running[0]
    other = "boss0001" if task.user_id != "boss0001" else "finance0001"
    with pytest.raises(TeaException) as caught:
        client.execute_process_instance_with_options(
            workflow_models.ExecuteProcessInstanceRequest(
                process_instance_id=instance_id, task_id=task.task_id, actioner_user_id=other, result="agree"
            ),
            wf_headers(workflow_models.ExecuteProcessInstanceHeaders, token),
            runtime(),
        )
    assert caught.value.data["statusCode"] == 400

    # Every approver agrees, one task after the other, until the instance completes.
    for _ in range(10):
        result = get_instance(config, token, instance_id).body.result
        running = [t for t in result.tasks if t.status == "RUNNING"]
        if not running:
            break
        task = running[0]
        done = client.execute_process_instance_with_options(
            workflow_models.ExecuteProcessInstanceRequest(
                process_instance_id=instance_id,
                task_id=task.task_id,
                actioner_user_id=task.user_id,
                result="agree",
                remark="OK within budget",
            ),
            wf_headers(workflow_models.ExecuteProcessInstanceHeaders, token),
            runtime(),
        )
        assert done.body.success is True and done.body.result is True
    assert result.status == "COMPLETED" and result.result == "agree"
    assert set(expected) <= set(result.to_map()), set(expected) - set(result.to_map())
    assert set(expected["tasks"][0]) - {"pcUrl", "mobileUrl"} <= set(result.tasks[0].to_map())
    assert any(r.remark == "OK within budget" for r in result.operation_records)


def test_workflow_terminate(config, token):
    instance_id = start_purchase(config, token, "PO-CONF-0002").body.instance_id
    client = workflow_client.Client(config)
    done = client.terminate_process_instance_with_options(
        workflow_models.TerminateProcessInstanceRequest(
            process_instance_id=instance_id, is_system=False, operating_user_id="staff0815", remark="withdrawn"
        ),
        wf_headers(workflow_models.TerminateProcessInstanceHeaders, token),
        runtime(),
    )
    assert done.body.success is True
    assert get_instance(config, token, instance_id).body.result.status == "TERMINATED"


def test_workflow_list_ids_pages_to_the_end(config, token):
    started = {start_purchase(config, token, f"PO-CONF-L{i:02d}").body.instance_id for i in range(5)}
    client = workflow_client.Client(config)
    now = int(time.time() * 1000)
    seen, next_token, pages = [], 0, 0
    while True:
        answer = client.list_process_instance_ids_with_options(
            workflow_models.ListProcessInstanceIdsRequest(
                process_code=PURCHASE_REQ,
                start_time=now - 3_600_000,
                end_time=now + 3_600_000,
                next_token=next_token,
                max_results=2,
            ),
            wf_headers(workflow_models.ListProcessInstanceIdsHeaders, token),
            runtime(),
        )
        pages += 1
        seen.extend(answer.body.result.list)
        assert len(answer.body.result.list) <= 2
        if answer.body.result.next_token in (None, "", 0, "0"):
            break
        next_token = int(answer.body.result.next_token)
        assert pages < 50
    assert started <= set(seen)
    assert len(seen) == len(set(seen))
    assert pages >= 3


def test_workflow_refusals(config, token):
    client = workflow_client.Client(config)
    headers = wf_headers(workflow_models.StartProcessInstanceHeaders, token)
    unknown_user = workflow_models.StartProcessInstanceRequest(
        originator_user_id="ghost0000",
        process_code=PURCHASE_REQ,
        form_component_values=[
            workflow_models.StartProcessInstanceRequestFormComponentValues(name="PO Number", value="x"),
            workflow_models.StartProcessInstanceRequestFormComponentValues(name="Amount (HKD)", value="1"),
        ],
    )
    with pytest.raises(TeaException) as caught:
        client.start_process_instance_with_options(unknown_user, headers, runtime())
    assert caught.value.data["statusCode"] == 400
    unknown_code = workflow_models.StartProcessInstanceRequest(
        originator_user_id="staff0815", process_code="PROC-NOPE", form_component_values=[]
    )
    with pytest.raises(TeaException) as caught:
        client.start_process_instance_with_options(unknown_code, headers, runtime())
    assert caught.value.data["statusCode"] == 400
    with pytest.raises(TeaException) as caught:
        get_instance(config, token, "no-such-instance-000")
    assert caught.value.data["statusCode"] == 400


# ---------------------------------------------------------------------------- contacts (§9)


def test_contacts_search_users_and_departments(config, token):
    client = contact_client.Client(config)
    users = client.search_user_with_options(
        contact_models.SearchUserRequest(query_word="Chan", offset=0, size=10),
        contact_models.SearchUserHeaders(x_acs_dingtalk_access_token=token),
        runtime(),
    )
    assert "manager4711" in users.body.list
    assert users.body.total_count == len(users.body.list) and users.body.has_more is False

    # Paging to the end: every user once.
    everyone, offset = [], 0
    while True:
        page = client.search_user_with_options(
            contact_models.SearchUserRequest(query_word="an", offset=offset, size=2),
            contact_models.SearchUserHeaders(x_acs_dingtalk_access_token=token),
            runtime(),
        )
        everyone.extend(page.body.list)
        offset += len(page.body.list)
        if not page.body.has_more:
            break
    assert len(everyone) == len(set(everyone)) == page.body.total_count > 2
    assert "manager4711" in everyone  # Chan Tai Man
    with pytest.raises(TeaException) as caught:
        client.search_user_with_options(
            contact_models.SearchUserRequest(query_word="an", offset=0, size=1000),
            contact_models.SearchUserHeaders(x_acs_dingtalk_access_token=token),
            runtime(),
        )
    assert caught.value.data["statusCode"] == 400

    depts = client.search_department_with_options(
        contact_models.SearchDepartmentRequest(query_word="Sales", offset=0, size=10),
        contact_models.SearchDepartmentHeaders(x_acs_dingtalk_access_token=token),
        runtime(),
    )
    assert sorted(depts.body.list) == [20003, 20004]
    assert depts.body.total_count == 2


def test_old_api_user_get_and_unknown_user(dingtalk, token, fixtures):
    old = examples(fixtures)["old_api_oapi_dingtalk_com"]
    url = dingtalk.url("/topapi/v2/user/get")
    answer = requests.post(url, params={"access_token": token}, json={"userid": "manager4711"}, timeout=10).json()
    assert answer["errcode"] == 0
    assert set(old["user_get_ok"]["body"]["result"]) <= set(answer["result"])
    missing = requests.post(url, params={"access_token": token}, json={"userid": "ghost0000"}, timeout=10).json()
    assert missing["errcode"] != 0
    bad = requests.post(url, params={"access_token": "not-a-token"}, json={"userid": "x"}, timeout=10).json()
    assert {k: bad[k] for k in ("errcode", "sub_code", "sub_msg", "errmsg")} == {
        k: old["topapi_invalid_token"]["body"][k] for k in ("errcode", "sub_code", "sub_msg", "errmsg")
    }


# ---------------------------------------------------------------------------- auth and limits (§8)


def test_bad_token_is_invalid_authentication(config, app, fixtures):
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["invalid_access_token"]
    client = robot_client.Client(config)
    request = robot_models.OrgGroupSendRequest(
        robot_code=app["robot_code"],
        open_conversation_id="cidAbCdEfGhIjKlMnOpQrStUv==",
        msg_key="sampleText",
        msg_param=json.dumps({"content": "x"}),
    )
    err = raises_code(
        lambda: client.org_group_send_with_options(
            request, robot_models.OrgGroupSendHeaders(x_acs_dingtalk_access_token="not-a-token"), runtime()
        ),
        expected["body"]["code"],
        expected["status"],
    )
    assert expected["body"]["message"] in err.message


def test_missing_token_is_missing_parameter(config, app, fixtures):
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["missing_token_header"]
    client = robot_client.Client(config)
    request = robot_models.OrgGroupSendRequest(
        robot_code=app["robot_code"],
        open_conversation_id="cidAbCdEfGhIjKlMnOpQrStUv==",
        msg_key="sampleText",
        msg_param=json.dumps({"content": "x"}),
    )
    raises_code(
        lambda: client.org_group_send_with_options(request, robot_models.OrgGroupSendHeaders(), runtime()),
        expected["body"]["code"],
        expected["status"],
    )


def test_qps_limit_per_app_and_api(config, token, fixtures):
    expected = examples(fixtures)["new_api_api_dingtalk_com"]["qps_app_per_api"]
    client = workflow_client.Client(config)
    headers = wf_headers(workflow_models.QuerySchemaByProcessCodeHeaders, token)
    request = workflow_models.QuerySchemaByProcessCodeRequest(process_code=PURCHASE_REQ)

    def call(_):
        try:
            client.query_schema_by_process_code_with_options(request, headers, runtime())
            return None
        except TeaException as err:
            return err

    # Bursts of 30 concurrent calls: more than 20 land inside one second even on a loaded machine.
    refused = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        for _ in range(10):
            refused = [err for err in pool.map(call, range(30)) if err is not None]
            if refused:
                break
    assert refused, "no call was refused"
    assert {err.code for err in refused} == {expected["body"]["code"]}
    assert {err.data["statusCode"] for err in refused} == {expected["status"]}
    time.sleep(1.1)  # the window is one second: the next call goes through
    client.query_schema_by_process_code_with_options(request, headers, runtime())


def test_card_http_callback_route(config, app, token, dingtalk):
    """A card with `callbackType: HTTP` calls back the URL registered for its route key (SDK
    `RegisterCallback`); the answer updates the card."""
    clicks = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            clicks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            answer = json.dumps({"cardData": {"cardParamMap": {"status": "approved over HTTP"}},
                                 "cardUpdateOptions": {"updateCardDataByKey": True}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = card_client.Client(config)
        url = f"http://127.0.0.1:{server.server_address[1]}/card/callback"
        registered = client.register_callback_with_options(
            card_models.RegisterCallbackRequest(callback_route_key="conformance-route", callback_url=url,
                                                api_secret="conformance-secret"),
            card_models.RegisterCallbackHeaders(x_acs_dingtalk_access_token=token),
            runtime(),
        )
        assert registered.body.result.callback_url == url
        # The same key to another URL without forceUpdate is refused.
        with pytest.raises(TeaException) as caught:
            client.register_callback_with_options(
                card_models.RegisterCallbackRequest(callback_route_key="conformance-route",
                                                    callback_url=url + "/other"),
                card_models.RegisterCallbackHeaders(x_acs_dingtalk_access_token=token),
                runtime(),
            )
        assert caught.value.data["statusCode"] == 400
        out_track_id = "conformance-http-card-1"
        create_and_deliver(config, app, token, ops_group(dingtalk), out_track_id,
                           callback_type_override="HTTP", callback_route_key="conformance-route")
        clicked = requests.post(
            dingtalk.url("/_sim/actions/card_click"),
            json={"outTrackId": out_track_id, "userId": "manager4711", "actionId": "approve", "params": {}},
            timeout=20,
        )
        assert clicked.status_code == 200, clicked.text
        assert clicks and clicks[0]["outTrackId"] == out_track_id and clicks[0]["userId"] == "manager4711"
        assert clicked.json()["card"]["status"] == "approved over HTTP"
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------- the fixture's wire requests


def test_every_fixture_wire_request_is_accepted(dingtalk, app, token, fixtures):
    """Replays what the SDK sent in the capture (its ids swapped for the simulator's seed) and
    checks each answer has the fixture's response shape."""
    ex = examples(fixtures)["new_api_api_dingtalk_com"]
    group = ops_group(dingtalk)
    swaps = {
        "dingappkey0000000001": app["app_key"],
        "app-secret-for-local-mock-only": app["app_secret"],
        "dingrobotcode0001": app["robot_code"],
        "cidAbCdEfGhIjKlMnOpQrStUv==": group,
        "PROC-1A2B3C4D-0000-4000-8000-000000000001": PURCHASE_REQ,
        "fw8ef8we8f76e6f7s8dxxxx": token,
        "dingbridge-pr-PO-2024-0042-v1": "conformance-wire-PO-2024-0042-v1",
    }

    def swap(value):
        text = json.dumps(value)
        for old, new in swaps.items():
            text = text.replace(old, new)
        return json.loads(text)

    shapes = {
        "/v1.0/oauth2/accessToken": ex["accessToken_ok"]["body"],
        "/v1.0/robot/oToMessages/batchSend": ex["batchSend_ok"]["body"],
        "/v1.0/robot/groupMessages/send": ex["groupMessages_send_ok"]["body"],
        "/v1.0/card/instances/createAndDeliver": ex["card_createAndDeliver_ok"]["body"],
        ("PUT", "/v1.0/card/instances"): ex["card_update_ok"]["body"],
        ("POST", "/v1.0/workflow/processInstances"): ex["workflow_start_ok"]["body"],
    }
    started = None
    for captured in wire_requests(fixtures):
        request = swap(captured)
        if request["path"] == "/v1.0/workflow/processInstances" and request["method"] == "GET":
            request["query"]["processInstanceId"] = started
        answer = requests.request(
            request["method"],
            dingtalk.url(request["path"]),
            params=request["query"],
            headers=request["headers"],
            data=None if request["body"] is None else json.dumps(request["body"]).encode(),
            timeout=10,
        )
        if request["path"] == "/v1.0/robot/messageFiles/download":
            # The capture had a simulated QPS refusal; here an unknown download code is refused.
            assert answer.status_code in (200, 400, 403, 404), answer.text
            continue
        assert answer.status_code == 200, (request["path"], answer.text)
        body = answer.json()
        shape = shapes.get(request["path"]) or shapes.get((request["method"], request["path"]))
        if shape is not None:
            assert set(shape) <= set(body) | {"filteredStaffIdList"}, (request["path"], body)
        if request["path"] == "/v1.0/workflow/processInstances" and request["method"] == "POST":
            started = body["instanceId"]
        if request["method"] == "GET":
            assert body["result"]["status"] == "RUNNING"
            assert set(ex["workflow_get_ok"]["body"]["result"]) - {"finishTime"} <= set(body["result"]), body


@pytest.mark.parametrize("case", ["monthly_quota_exceeded", "qps_global_per_api", "gateway_timeout"])
def test_platform_refusals_rehearsed_with_faults(dingtalk, config, token, fixtures, case):
    """Limits a test cannot reach by calling (a month's quota, all orgs' QPS, a gateway timeout)
    are rehearsed with `/_sim/faults` carrying DingTalk's answer; the SDK raises its error."""
    expected = examples(fixtures)["new_api_api_dingtalk_com"][case]
    dingtalk.faults(status=expected["status"], body=expected["body"], count=1)
    try:
        client = workflow_client.Client(config)
        raises_code(
            lambda: client.query_schema_by_process_code_with_options(
                workflow_models.QuerySchemaByProcessCodeRequest(process_code=PURCHASE_REQ),
                wf_headers(workflow_models.QuerySchemaByProcessCodeHeaders, token),
                runtime(),
            ),
            expected["body"]["code"],
            expected["status"],
        )
    finally:
        dingtalk.clear_faults()

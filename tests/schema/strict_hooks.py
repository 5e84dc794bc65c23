"""Schemathesis hooks for the strict-schema test (tests/e2e/strict_schema.rs).

The document's request schemas are as strict as JSON Schema can say. What it cannot say is named
by a `format` (`e164`, `mailbox`, `cron`, `time-zone`) whose real rule lives in the API's
validation; here each format gets a strategy that draws only values of that rule, the way a
client's validator would check them. The few rules that depend on the deployment or on the
rest of the request (an OTP template this deployment has, keys repeated within a batch, a
cursor this API returned) are fixed up in `before_call`, just before each request is sent, and named there.
"""

import uuid
from datetime import datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

# Valid numbers of a few plans (phonenumber's is_valid): a number's plan is no regular expression.
NUMBERS = ["+14155550100", "+14155552671", "+886912345678", "+447911123456", "+33612345678", "+819012345678",
           "+1 415 555 2671", "+1 (415) 555-2671", "+886 912-345-678"]  # spaced: the API normalises them
schemathesis.openapi.format("e164", st.sampled_from(NUMBERS))

_local = st.from_regex(r"\A[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]\Z")
_domain = st.from_regex(r"\A[a-z0-9]{1,12}(\.[a-z0-9]{1,12}){0,2}\.(org|com|net|tw)\Z")
_address = st.builds(lambda l, d: f"{l}@{d}", _local, _domain).filter(lambda a: ".." not in a)
_name = st.from_regex(r"\A[A-Za-z][A-Za-z .'-]{0,30}\Z")
schemathesis.openapi.format(
    "mailbox", st.one_of(_address, st.builds(lambda n, a: f"{n.strip() or 'X'} <{a}>", _name, _address))
)
schemathesis.openapi.format(
    "uri",
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}{path}",
        st.sampled_from(["http", "https", "HTTPS"]),
        st.sampled_from(["example.org", "hooks.example.com", "127.0.0.1:8080", "[::1]:9000"]),
        st.from_regex(r"\A(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]=[0-9]{1,4})?\Z"),
    ),
)
schemathesis.openapi.format(
    "cron",
    st.sampled_from(["0 9 * * 1-5", "*/5 * * * *", "0 0 1 * *", "30 3 * * 0", "0 */2 * * * *", "15 10 1-7 * *"]),
)
schemathesis.openapi.format("time-zone", st.sampled_from(["UTC", "Asia/Taipei", "Europe/Paris", "America/New_York"]))

# Times the API takes: occurred_at from 1970 to a day ahead, run_at at most 366 days ahead.
_now = datetime.now(timezone.utc)
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=(_now + timedelta(hours=12)).replace(tzinfo=None)
    ).map(lambda t: t.replace(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")),
)


def _whole_numbers(value):
    """JSON Schema's integer takes 7312.0; serde's u32/u64 take only 7312 (the lexical form is
    no schema matter)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _fix_job(job):
    for field in ("delay_seconds", "max_attempts"):
        if field in job:
            job[field] = _whole_numbers(job[field])
    payload = job.get("payload")
    if isinstance(payload, dict) and "ttl_seconds" in payload:
        payload["ttl_seconds"] = _whole_numbers(payload["ttl_seconds"])
    if job.get("kind") == "otp_sms" and isinstance(payload, dict) and "template" in payload:
        # The deployment under test configures no SMS_TEMPLATE_*: `default` is its one name.
        payload["template"] = "default"
    if "idempotency_key" in job:
        # Keys must differ within a batch, and a key seen before with another body is 422.
        job["idempotency_key"] = f"k-{uuid.uuid4()}"
    if job.get("kind") == "email" and isinstance(payload, dict):
        # to, cc and bcc together hold at most 50 addresses.
        total = 0
        for field in ("to", "cc", "bcc"):
            value = payload.get(field)
            if isinstance(value, list):
                value[:] = value[: max(0, 50 - total)] or value[:1]
                total += len(value)
            elif isinstance(value, str):
                total += 1


@schemathesis.hook
def before_call(ctx, case, kwargs):
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("jobs"), list):
            for job in body["jobs"]:
                if isinstance(job, dict):
                    _fix_job(job)
        elif isinstance(body.get("job"), dict):
            _fix_job(body["job"])
        else:
            _fix_job(body)
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"k-{uuid.uuid4()}"
    if case.query:
        # A cursor is opaque: only one this API returned is valid.
        case.query.pop("cursor", None)
        # `to` must be later than `from`.
        if "from" in case.query and "to" in case.query and case.query["from"] >= case.query["to"]:
            case.query.pop("to")

"""Schemathesis hooks for Emporium's contract run (scripts/schemathesis.sh).

Only one thing is adjusted: a valid `Idempotency-Key` the fuzzer generates is made unique.
Hypothesis reuses small values such as "0" across examples, and the API answers a key
reused with a different body with 422 `idempotency_key_reused`, as the contract says
(API.md; draft-ietf-httpapi-idempotency-key-header). That refusal comes from an earlier
request, not from the one being checked. Invalid keys are left as generated, so negative
tests still see them refused.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # Runs in every phase (examples, coverage, fuzzing, stateful), unlike `map_headers`.
    # Only for positive cases: editing a negative one makes schemathesis revalidate it,
    # which loses which header it meant to leave out. A negative case is refused anyway.
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return
    if case.headers:
        key = case.headers.get("Idempotency-Key")
        if isinstance(key, str) and VALID_KEY.match(key):
            case.headers["Idempotency-Key"] = f"st-{uuid.uuid4()}"

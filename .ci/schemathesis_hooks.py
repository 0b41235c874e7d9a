"""Schemathesis hooks for `.ci/run`: the caller stays an admin.

The run authenticates as one seeded admin. Left alone, the fuzzer soon learns
user ids from the list, promotes one of them and then demotes the caller,
after which every admin call is a 403 that tests nothing past the auth check.
So a request that would set the caller's own role sets the role of a seeded
stand-in instead; everything else is sent as generated.
"""

import os

import schemathesis

CALLER = os.environ["SCHEMATHESIS_ADMIN_ID"]
STAND_IN = os.environ["SCHEMATHESIS_STAND_IN_ID"]


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.operation.path == "/api/admin/users/{userId}" and case.method.upper() == "PATCH":
        if case.path_parameters.get("userId") == CALLER:
            case.path_parameters["userId"] = STAND_IN
    if case.operation.path == "/api/admin/users/roles" and isinstance(case.body, dict):
        changes = case.body.get("changes")
        if isinstance(changes, list):
            for change in changes:
                if isinstance(change, dict) and change.get("userId") == CALLER:
                    change["userId"] = STAND_IN

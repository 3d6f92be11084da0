"""The PyPI `pusher` server SDK against holdfast's HTTP API (shared/CHANNELS.md §3), beside a
pusher-js listener (`node tests/js/channels.js listen`) subscribed to py-one and py-two of the
app 12345 / second-key / second-secret.

    PORT=8080 python3 pusher_sdk.py

Prints PASS/FAIL per check; exits 0 only when all passed."""

import os
import sys

import pusher
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["PORT"])
failed = 0
passed = 0


def check(name, ok, detail=""):
    global failed, passed
    if ok:
        passed += 1
        print(f"PASS {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}: {detail}", flush=True)


def client(app_id="12345", key="second-key", secret="second-secret"):
    return pusher.Pusher(
        app_id=app_id, key=key, secret=secret, host=HOST, port=PORT, ssl=False, timeout=5
    )


def raises(name, error, call):
    try:
        result = call()
    except error as e:
        check(name, True)
        return e
    except Exception as e:  # noqa: BLE001 - reported as the failure
        check(name, False, f"raised {type(e).__name__}: {e}")
        return e
    check(name, False, f"succeeded with {result!r}")
    return None


def main():
    api = client()
    r = api.trigger("py-one", "from-python", {"lang": "python", "n": 1})
    check("trigger to one channel answers {}", r == {}, repr(r))
    r = api.trigger(["py-one", "py-two"], "multi", {"to": "both"})
    check("trigger to two channels answers {}", r == {}, repr(r))
    r = api.trigger_batch(
        [
            {"channel": "py-one", "name": "batch", "data": {"i": 1}},
            {"channel": "py-two", "name": "batch", "data": {"i": 2}},
        ]
    )
    check("trigger_batch answers", isinstance(r, dict), repr(r))

    info = api.channels_info()
    names = sorted(info.get("channels", {}))
    check("channels_info lists py-one and py-two", names == ["py-one", "py-two"], repr(info))
    one = api.channel_info("py-one", ["subscription_count"])
    check(
        "channel_info py-one",
        one.get("occupied") is True and one.get("subscription_count") == 1,
        repr(one),
    )
    none = api.channel_info("py-nobody")
    check("channel_info of an empty channel", none.get("occupied") is False, repr(none))

    raises(
        "wrong secret: PusherBadAuth (401)",
        PusherBadAuth,
        lambda: client(secret="wrong").trigger("py-one", "x", {}),
    )
    e = raises(
        "unknown app: 404",
        PusherBadStatus,
        lambda: client(app_id="99999").trigger("py-one", "x", {}),
    )
    if e is not None:
        check("unknown app status is 404", str(e).startswith("404"), str(e))
    raises(
        "users of a public channel: PusherBadRequest (400)",
        PusherBadRequest,
        lambda: api.users_info("py-one"),
    )

    # Tells the listener to check what it has and finish.
    api.trigger("py-one", "done", {})


try:
    main()
except Exception as e:  # noqa: BLE001 - any surprise is a failure with its cause
    check("script ran to the end", False, f"{type(e).__name__}: {e}")
print(f"{'OK' if failed == 0 else 'FAILED'} python sdk: {passed} checks passed, {failed} failed")
sys.exit(0 if failed == 0 and passed > 0 else 1)

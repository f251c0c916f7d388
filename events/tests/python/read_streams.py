"""An independent client reads loadshift's log, as an operator's tools would.

Uses nats-py only (no loadshift code): lists the streams, reads every message of
both, and decodes each as plain JSON. Prints one JSON summary on stdout for the
Rust test that runs it (events/tests/streams.rs) to check.

Usage: read_streams.py NATS_URL
"""

import asyncio
import json
import sys

import nats


async def main(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    streams = {}
    for info in await js.streams_info():
        streams[info.config.name] = {
            "subjects": sorted(info.config.subjects),
            "messages": info.state.messages,
            "storage": getattr(info.config.storage, "value", info.config.storage),
        }
    events = []
    for name, st in streams.items():
        # An ordered push consumer from the start: what `nats stream view` does.
        sub = await js.subscribe(">", stream=name, ordered_consumer=True)
        for _ in range(st["messages"]):
            msg = await sub.next_msg(timeout=5)
            env = json.loads(msg.data)
            events.append(
                {
                    "stream": name,
                    "subject": msg.subject,
                    "msg_id": (msg.headers or {}).get("Nats-Msg-Id"),
                    "id": env["id"],
                    "kind": env["kind"],
                    "node": env["node"],
                    "schema": env["schema"],
                    "occurred_at": env["occurred_at"],
                    "payload_keys": sorted(env["payload"].keys()),
                }
            )
        await sub.unsubscribe()
    await nc.close()
    print(json.dumps({"streams": streams, "events": events}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1]))

// A second independent client reads loadshift's log and object store, as an
// operator's own tools would: the official NATS JavaScript client
// (@nats-io/transport-node, @nats-io/jetstream, @nats-io/obj) and no
// loadshift code. Lists the streams, reads every message of TELEMETRY and
// EVENTS through an ordered consumer (what `nats stream view` does), decodes
// each as plain JSON, and lists the CHECKPOINTS object store. Prints one JSON
// summary on stdout for the Rust test that runs it
// (events/tests/foreign_clients.rs) to check; the same shape as
// ../python/read_streams.py prints, plus `objects`.
//
// Usage: node read_streams.js NATS_URL
// The packages come from package.json / package-lock.json beside this file;
// scripts/setup installs them with `npm ci` into /opt/loadshift/js, and the
// test points NODE_PATH at its node_modules.
"use strict";

const { connect } = require("@nats-io/transport-node");
const { jetstream, jetstreamManager } = require("@nats-io/jetstream");
const { Objm } = require("@nats-io/obj");

// The streams that hold events; the object store's own stream (OBJ_*) holds
// chunks of checkpoint images, read through the object store API instead.
const LOG_STREAMS = ["TELEMETRY", "EVENTS"];

async function main(url) {
  const nc = await connect({ servers: url, name: "loadshift-js-check" });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);

  const streams = {};
  for await (const info of jsm.streams.list()) {
    streams[info.config.name] = {
      subjects: [...info.config.subjects].sort(),
      messages: info.state.messages,
      storage: info.config.storage,
    };
  }

  const events = [];
  for (const name of LOG_STREAMS.filter((n) => n in streams)) {
    const consumer = await js.consumers.get(name);
    for (let i = 0; i < streams[name].messages; i++) {
      const msg = await consumer.next({ expires: 5000 });
      if (msg === null) {
        throw new Error(`${name}: no message ${i + 1} of ${streams[name].messages}`);
      }
      const env = msg.json();
      events.push({
        stream: name,
        subject: msg.subject,
        msg_id: msg.headers ? msg.headers.get("Nats-Msg-Id") : null,
        id: env.id,
        kind: env.kind,
        node: env.node,
        schema: env.schema,
        occurred_at: env.occurred_at,
        payload_keys: Object.keys(env.payload).sort(),
      });
    }
  }

  const objects = [];
  const objm = new Objm(nc);
  for await (const status of objm.list()) {
    const store = await objm.open(status.bucket);
    for (const o of await store.list()) {
      objects.push({ bucket: status.bucket, name: o.name, size: o.size, digest: o.digest });
    }
  }

  await nc.close();
  process.stdout.write(JSON.stringify({ streams, events, objects }) + "\n");
}

if (process.argv.length !== 3) {
  process.stderr.write("usage: node read_streams.js NATS_URL\n");
  process.exit(2);
}
main(process.argv[2]).catch((e) => {
  process.stderr.write(`read_streams.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});

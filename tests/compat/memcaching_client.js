'use strict'
// memcaching@0.0.4, the npm library the original Kraken Node.js client is built on,
// talks to this server unchanged. Usage: node memcaching_client.js PORT
// Prints one JSON line of what each step got; exits 1 at the first unexpected reply.
const MemcacheClient = require('memcaching')

const TIMEOUT_MS = 10000
const port = Number(process.argv[2])
if (!port) fail('usage: node memcaching_client.js PORT')

let current = 'connect'
setTimeout(() => fail(`no reply within ${TIMEOUT_MS} ms at step "${current}"`), TIMEOUT_MS)

function fail(message) {
  console.error(`memcaching compat: ${message}`)
  process.exit(1)
}

function connect() {
  return new MemcacheClient({ servers: [`127.0.0.1:${port}`] })
}

// The library answers a set with (null, 'STORED') or with the reply line as the error:
// a string such as 'NOT_FOUND', or { name: 'CLIENT_ERROR', message } for *ERROR lines.
function set(client, command, block) {
  return new Promise((resolve) =>
    client.set(command, block, 0, 0, (err, reply) =>
      resolve(err ? (err.name ? `${err.name} ${err.message}` : String(err)) : reply)))
}

// get answers [value, flags] on a hit, undefined on a miss.
function get(client, key) {
  return new Promise((resolve) =>
    client.get(key, (err, hit) =>
      resolve(err ? `error: ${JSON.stringify(err)}` : hit === undefined ? null : hit)))
}

async function main() {
  const a = connect()
  const b = connect()
  const steps = [
    ['A subscribes', () => set(a, 'subscribe', 'topicA topicB'), 'STORED'],
    // as the original client writes it: every entry, the last included, ends in CRLF
    ['B publishes', () => set(b, 'publish', 'MESSAGE topicA 9\r\nhi there!\r\n'), 'STORED'],
    ['B publishes CRLF payload',
      () => set(b, 'publish', 'MESSAGE topicZ topicB topicA 12\r\nline1\r\nline2'), 'STORED'],
    ['A polls', () => get(a, 'messages'),
      ['MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicB topicA 12\r\nline1\r\nline2', 0]],
    ['B polls, excluded from its own messages', () => get(b, 'messages'), null],
    ['A polls a drained queue', () => get(a, 'messages'), null],
    ['A unsubscribes topicA', () => set(a, 'unsubscribe', 'topicA'), 'STORED'],
    ['B publishes to topicA', () => set(b, 'publish', 'MESSAGE topicA 4\r\ngone'), 'STORED'],
    ['A polls after unsubscribing', () => get(a, 'messages'), null],
    ['B publishes before A registers', () => set(b, 'publish', 'MESSAGE topicR 3\r\nold'), 'STORED'],
    ['A registers', () => set(a, 'register', ''), 'STORED'],
    ['B publishes after A registers', () => set(b, 'publish', 'MESSAGE topicR 5\r\nretro'), 'STORED'],
    ['A subscribes retroactively', () => set(a, 'subscribe', 'topicR'), 'STORED'],
    ['A polls the retroactive message', () => get(a, 'messages'), ['MESSAGE topicR 5\r\nretro', 0]],
    ['A retro_subscribes from a stale horizon',
      () => set(a, 'retro_subscribe', '1000000000\r\ntopicS'), 'NOT_FOUND'],
  ]
  const results = {}
  for (const [name, run, want] of steps) {
    current = name
    const got = await run()
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      fail(`step "${name}": expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`)
    }
    results[name] = got
  }
  console.log(JSON.stringify({ ok: true, results }))
  process.exit(0)
}

main().catch((err) => fail(`step "${current}" threw: ${err && err.stack || err}`))

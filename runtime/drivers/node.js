// The node driver of sandboxd's interpreter sessions: one long-lived
// node whose global scope every cell runs in. The protocol is described in
// drivers.go; in short, cells arrive as JSON lines on fd 3 and results
// leave as JSON lines on fd 4, while the cells' own output goes to fds 1
// and 2 as it is written.
//
// Built-in modules only. The driver runs as the user's code's own process:
// it keeps its channels and its SIGINT handling out of the way of ordinary
// code, but it is not a security boundary.
'use strict';

// Listening first: a SIGINT while the driver starts or waits for a cell
// must not end it. During a script, vm's breakOnSigint takes SIGINT over.
let interrupt = null; // set while a cell awaits
process.on('SIGINT', () => {
  if (interrupt !== null) interrupt();
});

const fs = require('fs');
const net = require('net');
const path = require('path');
const { Writable } = require('stream');
const util = require('util');
const vm = require('vm');
const { createRequire } = require('module');

const DRIVER_FILE = __filename;

// What the driver calls, bound now so that a cell that patches fs or JSON
// does not break the protocol by accident.
const writeSync = fs.writeSync;
const stringify = JSON.stringify;
const parse = JSON.parse;
const inspect = util.inspect;
const exitProcess = process.exit.bind(process);

// Reopens fds 3 and 4 through /proc, close-on-exec as node opens
// everything, and closes them, so that a cell that closes or reuses 3 or
// 4 does not reach the driver's channels, and programs the cell starts do
// not inherit them; /dev/null takes their place, so that node does not
// put one of its own descriptors there. Without /proc (or for a socket)
// they are kept as they are.
function hold(fds) {
  let held;
  try {
    held = fds.map(([fd, flags]) => fs.openSync(`/proc/self/fd/${fd}`, flags));
  } catch {
    return fds.map(([fd]) => fd);
  }
  for (const [fd] of fds) {
    fs.closeSync(fd);
    fs.openSync('/dev/null', fs.constants.O_RDWR); // the lowest free descriptor: fd
  }
  return held;
}

const [control, results] = hold([[3, fs.constants.O_RDONLY], [4, fs.constants.O_WRONLY]]);

// Writes all of data to fd, synchronously.
function writeAll(fd, data) {
  let off = 0;
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1); // a non-blocking pipe is full
    }
  }
}

function write(message) {
  writeAll(results, Buffer.from(stringify(message) + '\n'));
}

// The cells' stdout and stderr write through at once, with no state of
// their own: what a cell printed is out before its result, and a SIGINT
// that breaks a cell in the middle of a write (vm terminates the script
// wherever it is) cannot leave a stream stuck. They stand in for node's
// own, made before node makes those, which would also set fds 1 and 2
// non-blocking, for the programs the cells start with them too.
function writeThrough(fd) {
  return function write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    let err = null;
    try {
      const data = typeof chunk === 'string' ? Buffer.from(chunk, encoding || 'utf8') : chunk;
      writeAll(fd, data);
    } catch (e) {
      err = e; // closed or broken by the cell: the output is lost
    }
    if (typeof callback === 'function') process.nextTick(callback, err);
    return true;
  };
}

function stdioStream(fd) {
  const write = writeThrough(fd);
  const stream = new Writable({ write });
  stream.write = write; // an own property: Writable's state is never used
  stream.fd = fd;
  return stream;
}

for (const [name, fd] of [['stdout', 1], ['stderr', 2]]) {
  Object.defineProperty(process, name, { value: stdioStream(fd), writable: true, configurable: true, enumerable: true });
}

let outputs = []; // the running cell's rich outputs

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function toOutput(obj) {
  if (obj instanceof Uint8Array) {
    const bytes = Buffer.from(obj.buffer, obj.byteOffset, obj.byteLength);
    if (bytes.subarray(0, 8).equals(PNG_MAGIC)) return { mime: 'image/png', data: bytes.toString('base64') };
    return { mime: 'text/plain', data: inspect(obj) };
  }
  if (typeof obj === 'string') return { mime: 'text/plain', data: obj };
  if (obj !== null && typeof obj === 'object') {
    if (typeof obj.mime === 'string' && 'data' in obj) {
      const { mime, data } = obj;
      if (data instanceof Uint8Array) {
        return { mime, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
      }
      if (typeof data === 'string') return { mime, data };
      return { mime, data: stringify(data) ?? String(data) };
    }
    const proto = Object.getPrototypeOf(obj);
    if (Array.isArray(obj) || proto === Object.prototype || proto === null) {
      try {
        const json = stringify(obj);
        if (json !== undefined) return { mime: 'application/json', data: json };
      } catch {
        // A cycle or a BigInt: shown as text below.
      }
    }
  }
  return { mime: 'text/plain', data: inspect(obj) };
}

// display(...objs) shows each object in the cell's result: a PNG Buffer
// as image/png, an array or plain object as application/json, a string as
// text/plain, {mime, data} as it is, anything else as util.inspect shows it.
function display(...objs) {
  for (const obj of objs) outputs.push(toOutput(obj));
}

// A cell's require resolves from the working directory, as the REPL's does.
const userRequire = createRequire(path.join(process.cwd(), '<repl>'));

function defineGlobals() {
  for (const [name, value] of [['display', display], ['require', userRequire]]) {
    if (globalThis[name] === undefined) {
      Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
    }
  }
}

process.argv.splice(1); // as in the REPL: no script

// process.exit in a cell ends the cell, not the session, as sys.exit does
// in python.
class ProcessExit extends Error {}
Object.defineProperty(ProcessExit.prototype, 'name', { value: 'ProcessExit', writable: true, configurable: true });
process.exit = function exit(code) {
  throw new ProcessExit(code === undefined ? '' : String(code));
};

// What a timer or a promise of a cell throws later belongs to no cell: it
// goes to stderr, and the driver goes on.
function reportLate(prefix, err) {
  let text;
  try {
    text = err instanceof Error && typeof err.stack === 'string' ? userStack(err.stack) : inspect(err);
  } catch {
    text = '(unprintable)';
  }
  try {
    writeSync(2, `${prefix} ${text}\n`);
  } catch {
    // No stderr: nowhere to say it.
  }
}
process.on('uncaughtException', (err) => reportLate('Uncaught', err));
process.on('unhandledRejection', (reason) => reportLate('Uncaught (in promise)', reason));

const INTERRUPTED = 'ERR_SCRIPT_EXECUTION_INTERRUPTED';

function interruptedError() {
  const err = new Error('Script execution was interrupted by `SIGINT`'); // as vm's breakOnSigint says
  err.code = INTERRUPTED;
  return err;
}

// Cells are evaluated in V8's REPL mode, through an in-process inspector
// session, as Chrome's console does: top-level await, and let, const and
// class declared again by a later cell. Without the inspector (a node
// built without it), or with SANDBOXD_DRIVER_SCRIPT_MODE=1 (for tests),
// they run as scripts, which allow neither.
let session = null;
if (process.env.SANDBOXD_DRIVER_SCRIPT_MODE !== '1') {
  try {
    const inspector = require('inspector');
    session = new inspector.Session();
    session.connect();
  } catch {
    session = null;
  }
}
delete process.env.SANDBOXD_DRIVER_SCRIPT_MODE;

// The hooks through which the inspector's evaluation is started inside a
// script run with breakOnSigint, and a remote object's value comes back.
const RUN = Symbol.for('sandboxd.driver.run');
const CAPTURE = Symbol.for('sandboxd.driver.capture');
let runNow = null;
let captured;
Object.defineProperty(globalThis, RUN, { value: () => runNow(), configurable: true });
Object.defineProperty(globalThis, CAPTURE, { value: (v) => { captured = v; }, configurable: true });
const trampoline = new vm.Script("globalThis[Symbol.for('sandboxd.driver.run')]()");

function post(method, params) {
  return new Promise((resolve, reject) => {
    session.post(method, params, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// The value a remote object of the inspector stands for, boxed: {value}.
async function fromRemote(ro) {
  if (ro.objectId) {
    captured = undefined;
    await post('Runtime.callFunctionOn', {
      objectId: ro.objectId,
      functionDeclaration: "function () { 'use strict'; globalThis[Symbol.for('sandboxd.driver.capture')](this); }",
    });
    const value = captured;
    captured = undefined;
    return { value };
  }
  if ('unserializableValue' in ro) {
    const u = ro.unserializableValue;
    return { value: u.endsWith('n') ? BigInt(u.slice(0, -1)) : Number(u) };
  }
  return { value: ro.value };
}

function hasCellFrame(err) {
  return err !== null && typeof err === 'object' && typeof err.stack === 'string' && /\n\s+at .*<cell[ _]/.test(err.stack);
}

// A cell that starts with "{" and does not end with ";" is an object
// literal if it compiles as one, as in node's REPL; not a block.
function asObjectLiteral(code) {
  if (!/^\s*{/.test(code) || /;\s*$/.test(code)) return null;
  const wrapped = `(${code.trim()}\n)`;
  try {
    new vm.Script(wrapped); // compiled only
    return wrapped;
  } catch {
    return null;
  }
}

// Evaluates a cell in REPL mode: a promise of {value}, the completion
// value (boxed: a promise there is shown, not waited for, as in the REPL).
function evalReplMode(code, id) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (fn, v) => {
      if (!settled) {
        settled = true;
        interrupt = null;
        fn(v);
      }
    };
    const objectGroup = `cell-${id}`;
    const onEvaluated = async (err, res) => {
      try {
        if (err) throw err;
        const thrown = res.exceptionDetails;
        const { value } = await fromRemote(thrown ? thrown.exception || { type: 'undefined' } : res.result);
        post('Runtime.releaseObjectGroup', { objectGroup }).catch(() => {});
        if (!thrown) return settle(resolve, { value });
        if (value instanceof SyntaxError && !hasCellFrame(value)) {
          // Not compiled: node's own compiler error shows where.
          try {
            new vm.Script(code, { filename: `<cell ${id}>` });
          } catch (scriptErr) {
            return settle(reject, scriptErr instanceof SyntaxError && !/await/.test(scriptErr.message) ? scriptErr : value);
          }
        }
        settle(reject, value);
      } catch (driverErr) {
        settle(reject, driverErr);
      }
    };
    // A sourceURL ends at a space: the frames are named <cell_ID>, and
    // renamed in the traceback.
    const expression = `${asObjectLiteral(code) ?? code}\n//# sourceURL=<cell_${id}>`;
    runNow = () => session.post('Runtime.evaluate', { expression, replMode: true, awaitPromise: true, objectGroup }, onEvaluated);
    interrupt = () => settle(reject, interruptedError());
    try {
      // The code's synchronous part runs now, inside post, where SIGINT
      // can break it; what follows an await, only in callbacks.
      trampoline.runInThisContext({ breakOnSigint: true });
    } catch (err) {
      settle(reject, err);
    }
  });
}

// Runs a cell as a script: the way without the inspector.
function runScript(code, id) {
  const filename = `<cell ${id}>`;
  const script = new vm.Script(asObjectLiteral(code) ?? code, { filename });
  return { value: script.runInThisContext({ breakOnSigint: true, displayErrors: false }) };
}

// Runs a cell: {value}, its completion value, or a promise of it.
function runCell(code, id) {
  return session !== null ? evalReplMode(code, id) : runScript(code, id);
}

// The stack from the user's cell on: the driver's frames and node's below
// the last cell frame are dropped.
function userStack(stack) {
  const lines = stack.replace(/<cell_(-?\d+)>/g, '<cell $1>').split('\n');
  const isFrame = (line) => /^\s+at /.test(line);
  let lastCell = -1;
  lines.forEach((line, i) => {
    if (isFrame(line) && line.includes('<cell ')) lastCell = i;
  });
  return lines.filter((line, i) => !isFrame(line) || (i <= lastCell && !line.includes(DRIVER_FILE))).join('\n');
}

function describe(err) {
  try {
    const errorLike = err instanceof Error ||
      (err !== null && typeof err === 'object' && typeof err.name === 'string' && typeof err.message === 'string');
    if (!errorLike) {
      const text = inspect(err);
      return { name: 'Uncaught', message: text, traceback: `Uncaught ${text}` };
    }
    const message = String(err.message);
    if (err.code === INTERRUPTED) return { name: 'Interrupted', message, traceback: `Interrupted: ${message}` };
    const name = String(err.name);
    const stack = typeof err.stack === 'string' ? err.stack : `${name}: ${message}`;
    return { name, message, traceback: userStack(stack) };
  } catch {
    return { name: 'Error', message: 'the thrown value could not be described', traceback: '' };
  }
}

async function handle(line) {
  let message;
  try {
    message = parse(line);
  } catch (err) {
    return { id: null, error: { name: 'ProtocolError', message: `cell: ${err.message}`, traceback: '' } };
  }
  const isObject = message !== null && typeof message === 'object';
  const id = isObject ? message.id : undefined;
  const code = isObject ? message.code : undefined;
  if (!Number.isSafeInteger(id) || typeof code !== 'string') {
    const error = { name: 'ProtocolError', message: 'a cell is {"id": <int>, "code": <string>}', traceback: '' };
    return { id: Number.isSafeInteger(id) ? id : null, error };
  }
  outputs = [];
  defineGlobals();
  const result = { id };
  try {
    const { value } = await runCell(code, id);
    if (value !== undefined) result.value = inspect(value);
  } catch (err) {
    result.error = describe(err);
  }
  if (outputs.length > 0) result.outputs = outputs;
  outputs = [];
  return result;
}

const queue = [];
let busy = false;
let ended = false;

async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) {
    const line = queue.shift();
    if (line.trim() === '') continue;
    let result;
    try {
      result = await handle(line);
    } catch (err) {
      result = { id: null, error: { name: 'DriverError', message: String(err && err.message), traceback: '' } };
    }
    try {
      write(result);
    } catch {
      exitProcess(1); // no one reads the results any more
    }
  }
  busy = false;
  if (ended) exitProcess(0); // EOF: timers cells left do not keep it
}

let input;
try {
  input = new net.Socket({ fd: control, readable: true, writable: false });
} catch {
  input = fs.createReadStream(null, { fd: control }); // not a pipe: a file, say
}
let partial = [];
input.on('data', (chunk) => {
  let start = 0;
  let nl;
  while ((nl = chunk.indexOf(10, start)) !== -1) {
    partial.push(chunk.subarray(start, nl));
    queue.push(Buffer.concat(partial).toString('utf8'));
    partial = [];
    start = nl + 1;
  }
  if (start < chunk.length) partial.push(chunk.subarray(start));
  pump();
});
const end = () => {
  if (ended) return;
  if (partial.length > 0) queue.push(Buffer.concat(partial).toString('utf8'));
  partial = [];
  ended = true;
  pump();
};
input.on('end', end);
input.on('error', end);

defineGlobals();
write({ ready: true, language: 'javascript', version: process.versions.node });

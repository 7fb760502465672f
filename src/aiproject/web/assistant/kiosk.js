// The assistant's kiosk: handshake (voice or text), face recognition or enrolment, the
// interview, storage and the summary, over the three surfaces of spec 01.
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const params = new URLSearchParams(location.search);

const FACE_HINTS = {
  "no-face": "请正对摄像头", "several-faces": "画面中只能有一个人", "too-small": "请靠近一些",
  "too-dark": "光线太暗", "blurred": "请保持不动", "off-angle": "请正视摄像头",
  "eyes-closed": "请睁开眼睛", "below-threshold": "未识别到已录入的人脸",
  "duplicate": "请稍微转动一下头部", "different-person": "请同一个人完成录入",
  "liveness": "请眨眨眼", "face-taken": "这张人脸已录入到其他用户名下",
  "over-budget": "尝试次数过多",
};
const LABELS = {
  name: "姓名", gender: "性别", nationality: "民族", phone: "联系电话", id_card: "身份证号码",
  native_place: "籍贯", birth: "出生日期", email: "电子邮箱", career: "职业", address: "现住址",
  hukou: "户籍所在地", political_status: "政治面貌", marital_status: "婚姻状况",
  religion: "宗教信仰", education: "文化程度", age: "年龄", item: "事项", department: "办理地点",
  materials: "所需材料", steps: "办理流程", fees: "费用", time_limit: "办理时限",
};

const state = { userId: "", hash: "", stream: null, config: null, tts: null, spoken: 0, asked: 0 };

function setStep(step, text, isError = false) {
  document.body.dataset.step = step;
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadConfig() {
  const reply = await fetch("/kiosk/config");
  const config = await reply.json();
  const host = location.hostname;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const flow = params.get("ws") ? [params.get("ws")]
    : config.ws_ports.map((port) => `${scheme}://${host}:${port}`);
  const tools = params.get("tools") || `${scheme}://${host}:${config.tools_port}`;
  return { flow, tools };
}

// A socket whose messages are read in order with next().
class Channel {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiting = [];
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.push(event.data);
    ws.onclose = () => this.push(null);
  }
  push(item) {
    const waiter = this.waiting.shift();
    if (waiter) waiter(item); else this.queue.push(item);
  }
  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  send(data) { this.ws.send(data); }
  close() { this.ws.close(); }
  static open(urls) {
    return urls.reduce((previous, url) => previous.catch(() => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(new Channel(ws));
      ws.onerror = () => reject(new Error(`cannot open ${url}`));
    })), Promise.reject(new Error("no address")));
  }
}

async function post(body) {
  for (let attempt = 0; attempt < 30; attempt += 1) {
    const reply = await fetch("/", { method: "POST", body: JSON.stringify(body),
      headers: { "content-type": "application/json" } });
    const answer = await reply.json();
    if (answer.type !== "processing" && answer.type !== "busy") return answer;
    setStep(document.body.dataset.step, answer.type === "busy" ? "服务器繁忙，稍候重试…" : "正在处理，请稍候…");
    await sleep(1000 * Number(reply.headers.get("retry-after") || 2));
  }
  throw new Error("服务器一直繁忙");
}

function recordAudio(ms) {
  const tracks = state.stream.getAudioTracks();
  const recorder = new MediaRecorder(new MediaStream(tracks));
  const parts = [];
  recorder.ondataavailable = (event) => parts.push(event.data);
  const done = new Promise((resolve) => { recorder.onstop = () => resolve(new Blob(parts, { type: recorder.mimeType })); });
  recorder.start();
  setTimeout(() => recorder.stop(), ms);
  return done;
}

function dataUrl(blob) {
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(blob);
  });
}

function grabFrame() {
  const canvas = $("frame");
  canvas.getContext("2d").drawImage($("preview"), 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
}

async function speak(text) {
  if (!$("speak").checked || !text) return;
  try {
    if (!state.tts) state.tts = await Channel.open([`${state.config.tools}/tts`]);
    state.tts.send(text);
    const audio = await state.tts.next();
    if (!(audio instanceof ArrayBuffer)) return;
    state.spoken += 1;
    document.body.dataset.spoken = String(state.spoken);
    new Audio(URL.createObjectURL(new Blob([audio], { type: "audio/wav" }))).play().catch(() => {});
  } catch (err) { console.warn("tts", err); }
}

async function handshake() {
  const text = $("request-text").value.trim();
  let input;
  if (text) {
    input = { type: "text", text };
  } else {
    setStep("handshake", "请说出您要办理的业务…（正在录音）");
    input = { type: "audio", media: await dataUrl(await recordAudio(3500)) };
  }
  setStep("handshake", "正在识别您要办理的业务…");
  const answer = await post({ user_id: state.userId, type: "handshake", info: {}, input });
  if (answer.type !== "handshake") throw new Error(answer.detail || answer.type);
  state.hash = answer.hash;
  $("service").hidden = false;
  $("classify").textContent = answer.classify || "（未识别）";
  $("flow").textContent = answer.flow;
  speak(answer.flow.split("\n")[0]);
  return answer.classify !== "";
}

async function recognise() {
  const channel = await Channel.open([`${state.config.tools}/face_predict`]);
  try {
    for (let i = 0; i < 6; i += 1) {
      channel.send(await grabFrame());
      const reply = JSON.parse(await channel.next());
      $("face-status").textContent = FACE_HINTS[reply.reason] || reply.message;
      if (reply.message === "success") return reply.user_id;
      if (reply.message === "fail") return "";
      await sleep(250);
    }
    return "";
  } finally { channel.close(); }
}

async function enrol() {
  const channel = await Channel.open(state.config.flow);
  channel.send(JSON.stringify({ user_id: state.userId, hash: state.hash, type: "face_train" }));
  for (let i = 0; i < 80; i += 1) {
    channel.send(await grabFrame());
    const message = await channel.next();
    if (message === null) break;
    const reply = JSON.parse(message);
    const progress = reply.samples !== undefined ? `（${reply.samples}/${reply.needed}）` : "";
    $("face-status").textContent = `人脸录入${progress} ${FACE_HINTS[reply.reason] || ""}`;
    if (reply.message === "success") { channel.close(); return true; }
    if (reply.message === "fail") { $("face-status").textContent = FACE_HINTS[reply.reason] || "录入失败"; return false; }
    await sleep(300);
  }
  channel.close();
  return false;
}

async function faces() {
  setStep("face", "正在识别人脸，请正对摄像头…");
  const known = await recognise();
  if (known === state.userId) {
    $("face-status").textContent = "欢迎回来！已识别到您的人脸";
    document.body.dataset.face = "recognised";
    return;
  }
  setStep("face", "正在录入人脸，请正对摄像头并稍微转动头部…");
  const enrolled = await enrol();
  document.body.dataset.face = enrolled ? "enrolled" : "failed";
  if (enrolled) $("face-status").textContent = "人脸录入成功";
}

function nextAnswer(channel) {
  return new Promise((resolve) => {
    $("answer-form").onsubmit = (event) => {
      event.preventDefault();
      const text = $("answer").value.trim();
      if (!text) return;
      $("answer").value = "";
      resolve(text);
    };
    $("voice").onclick = async () => {
      $("voice").disabled = true;
      setStep("qna", "请说出您的回答…（正在录音）");
      const blob = await recordAudio(4000);
      $("voice").disabled = false;
      channel.send(await blob.arrayBuffer());
      resolve(null);
    };
  });
}

async function interview() {
  setStep("qna", "请回答以下问题");
  $("qna").hidden = false;
  const channel = await Channel.open(state.config.flow);
  channel.send(JSON.stringify({ user_id: state.userId, type: "qna", hash: state.hash }));
  for (;;) {
    const message = await channel.next();
    if (message === null || message === "") break;
    if (message.startsWith("{")) {
      const error = JSON.parse(message);
      $("question").textContent = error.detail || error.reason;
      if (error.reason === "processing" || error.reason === "no-handshake") throw new Error(error.detail);
      continue;
    }
    $("question").textContent = message;
    state.asked += 1;
    document.body.dataset.asked = String(state.asked);
    document.body.dataset.question = message;
    speak(message);
    const answer = await nextAnswer(channel);
    if (answer !== null) {
      channel.send(answer);
      const item = document.createElement("li");
      item.textContent = `${message} → ${answer}`;
      $("transcript").append(item);
    }
  }
  $("question").textContent = "信息采集完成";
}

function renderValue(value) {
  if (Array.isArray(value)) return value.map((v, i) => `${i + 1}. ${v}`).join("\n");
  if (value === true) return "是";
  if (value === false) return "否";
  return value === null || value === undefined ? "—" : String(value);
}

function renderTables(tables) {
  const box = $("tables");
  box.replaceChildren();
  for (const table of tables) {
    const element = document.createElement("table");
    for (const [key, value] of Object.entries(table)) {
      const row = element.insertRow();
      const head = document.createElement("th");
      head.textContent = LABELS[key] || key;
      row.append(head);
      const cell = row.insertCell();
      cell.style.whiteSpace = "pre-wrap";
      cell.textContent = renderValue(value);
    }
    box.append(element);
  }
}

async function finish() {
  setStep("storage", "正在保存您的信息…");
  const stored = await post({ user_id: state.userId, type: "storage", hash: state.hash });
  if (stored.type !== "storage") throw new Error(stored.detail || stored.type);
  const summary = await post({ user_id: state.userId, type: "summary", hash: state.hash });
  if (summary.type !== "summary") throw new Error(summary.detail || summary.type);
  $("result").hidden = false;
  renderTables(summary.output.tables);
  setStep("done", `办理清单已生成：${summary.output.classify}`);
}

async function run() {
  $("start").disabled = true;
  try {
    state.userId = $("user-id").value.trim();
    state.config = await loadConfig();
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    $("preview").srcObject = state.stream;
    await $("preview").play();
    $("face-status").textContent = "摄像头已开启";
    if (!(await handshake())) {
      setStep("clarify", "没有识别出要办理的业务，请换个说法再试一次");
      return;
    }
    await faces();
    await interview();
    await finish();
  } catch (err) {
    setStep("error", `出错了：${err.message}`, true);
  } finally {
    $("start").disabled = false;
  }
}

$("user-id").value = params.get("user") || `kiosk-${Math.random().toString(36).slice(2, 10)}`;
$("start").addEventListener("click", run);
document.body.dataset.step = "ready";

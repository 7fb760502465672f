// The spec 05 demo: WebRTC negotiation with /offer, then the control routes and /events.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pc: null, sessionid: null, token: null, events: null, recording: false };
// Read by the browser test: how many video frames the element has presented.
window.avatarStats = { framesPresented: 0, events: [] };

function log(text, error = false) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (error) item.className = "error";
  $("log").prepend(item);
}

function setSpeaking(value) {
  const badge = $("speaking");
  badge.dataset.state = value;
  badge.className = `badge ${value === "speaking" ? "speaking" : value === "idle" ? "listening" : "idle"}`;
  badge.textContent = { speaking: "正在说话", idle: "空闲", offline: "未连接" }[value];
}

async function call(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Session-Token": state.token || "" },
    body: JSON.stringify({ sessionid: state.sessionid, ...body }),
  });
  const answer = await response.json();
  if (answer.code !== 0) log(`${path}: ${answer.msg || answer.data}`, true);
  return answer;
}

function enable(connected) {
  for (const id of ["send", "stop", "apply", "record", "upload", "disconnect"]) $(id).disabled = !connected;
  $("connect").disabled = connected;
}

function countFrames(video) {
  if (!("requestVideoFrameCallback" in video)) return;
  const tick = () => {
    window.avatarStats.framesPresented += 1;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function listen() {
  const query = new URLSearchParams({ sessionid: state.sessionid, token: state.token });
  const source = new EventSource(`events?${query}`);
  const show = (kind, handler) =>
    source.addEventListener(kind, (message) => {
      const data = JSON.parse(message.data);
      window.avatarStats.events.push({ kind, data });
      handler(data);
    });
  show("hello", (data) => setSpeaking(data.speaking ? "speaking" : "idle"));
  show("speaking_start", () => setSpeaking("speaking"));
  show("speaking_end", (data) => {
    setSpeaking("idle");
    if (data.interrupted) log("已打断");
  });
  show("sentence_start", (data) => log(`说: ${data.text}`));
  show("performance_start", () => log("表演开始"));
  show("performance_end", () => log("表演结束"));
  show("record_start", () => log("开始录制"));
  show("record_end", (data) => log(`录像完成 ${data.duration_s.toFixed(1)} s`));
  show("error", (data) => log(`错误 ${data.code}: ${data.message}`, true));
  show("session_end", (data) => {
    log(`会话结束: ${data.reason}`);
    disconnect();
  });
  state.events = source;
}

async function connect() {
  $("connect").disabled = true;
  const pc = new RTCPeerConnection();
  state.pc = pc;
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    $("video").srcObject = stream;
  });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
  const response = await fetch("offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await response.json();
  if (answer.code === -1) {
    log(`连接失败: ${answer.msg}`, true);
    pc.close();
    $("connect").disabled = false;
    return;
  }
  state.sessionid = answer.sessionid;
  state.token = answer.token;
  $("sessionid").textContent = String(answer.sessionid);
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  countFrames($("video"));
  listen();
  enable(true);
  log("已连接");
}

function disconnect() {
  if (state.events) state.events.close();
  if (state.pc) state.pc.close();
  state.pc = state.events = null;
  enable(false);
  setSpeaking("offline");
}

$("connect").addEventListener("click", () => connect().catch((err) => log(String(err), true)));
$("disconnect").addEventListener("click", disconnect);

$("say").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  await call("human", { type: $("mode").value, text, interrupt: $("interrupt").checked });
  $("text").value = "";
});

$("stop").addEventListener("click", () => call("interrupt", {}));

$("apply").addEventListener("click", () =>
  call("set_audiotype", { audiotype: Number($("audiotype").value), reinit: $("reinit").checked }),
);

$("record").addEventListener("click", async () => {
  const type = state.recording ? "end_record" : "start_record";
  const answer = await call("record", { type });
  if (answer.code !== 0) return;
  state.recording = !state.recording;
  $("record").textContent = state.recording ? "结束录制" : "开始录制";
  if (type === "end_record") {
    const link = $("download");
    link.href = `${answer.url.replace(/^\//, "")}&token=${encodeURIComponent(state.token)}`;
    link.download = answer.name;
    link.hidden = false;
  }
});

$("upload").addEventListener("click", async () => {
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("sessionid", String(state.sessionid));
  form.append("file", file);
  const response = await fetch("humanaudio", {
    method: "POST",
    headers: { "X-Session-Token": state.token },
    body: form,
  });
  const answer = await response.json();
  if (answer.code !== 0) log(`上传失败: ${answer.data || answer.msg}`, true);
});

window.addEventListener("pagehide", disconnect);

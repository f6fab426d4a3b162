// harken's page: live transcription from the microphone over /v1/stream, files over /v1/transcribe,
// subtitles of either as .srt or .vtt. Plain browser JavaScript; every URL is relative to the page.
"use strict";

const $ = (id) => document.getElementById(id);
const FRAME_MS = 50; // audio per WebSocket message

const state = {
  apiKey: new URLSearchParams(location.search).get("api_key") || sessionStorage.getItem("harken_api_key") || "",
  sampleRate: 16000,
  segments: [], // {start, end, text}: the transcript on the page, for the subtitles
  recording: null, // {socket, context, media, node}
  offset: 0, // seconds before the current recording, so live segments follow the ones shown
};

function authHeaders() {
  return state.apiKey ? { Authorization: "Bearer " + state.apiKey } : {};
}

function setStatus(text, isError = false, where = "status") {
  $(where).textContent = text;
  $(where).className = isError ? "status error" : "status";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error && body.error.message ? body.error.message : response.statusText;
  } catch {
    return response.status + " " + response.statusText;
  }
}

async function loadModel() {
  const response = await fetch("v1/models", { headers: authHeaders() });
  if (response.status === 401) {
    $("model").textContent = "This service needs an API key.";
    $("key-form").hidden = false;
    return;
  }
  if (!response.ok) {
    $("model").textContent = "The service did not answer: " + (await errorText(response));
    return;
  }
  const info = (await response.json()).data[0];
  state.sampleRate = info.sample_rate;
  const language = info.language ? ", " + info.language : "";
  $("model").textContent = `${info.id} (${info.sample_rate} Hz${language}), harken ${info.harken_version}`;
  $("key-form").hidden = true;
  $("record").disabled = !navigator.mediaDevices || !window.AudioWorkletNode;
  $("upload").disabled = false;
  if ($("record").disabled) setStatus("This browser gives no microphone here (it needs https or localhost).", true);
}

// ---- the transcript -------------------------------------------------------------------------------

function render() {
  $("finals").textContent = state.segments.map((s) => s.text).join(" ");
  const ready = state.segments.length > 0;
  $("download-srt").disabled = !ready;
  $("download-vtt").disabled = !ready;
}

function clock(seconds, separator) {
  let millis = Math.round(seconds * 1000);
  const hours = Math.floor(millis / 3600000);
  millis -= hours * 3600000;
  const minutes = Math.floor(millis / 60000);
  millis -= minutes * 60000;
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(hours, 2)}:${pad(minutes, 2)}:${pad(Math.floor(millis / 1000), 2)}${separator}${pad(millis % 1000, 3)}`;
}

function subtitles(format) {
  if (format === "srt") {
    return state.segments
      .map((s, i) => `${i + 1}\n${clock(s.start, ",")} --> ${clock(s.end, ",")}\n${s.text}\n`)
      .join("\n");
  }
  return "WEBVTT\n\n" + state.segments.map((s) => `${clock(s.start, ".")} --> ${clock(s.end, ".")}\n${s.text}\n`).join("\n");
}

function download(format) {
  const types = { srt: "application/x-subrip", vtt: "text/vtt" };
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([subtitles(format)], { type: types[format] }));
  link.download = "transcript." + format;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ---- the microphone -------------------------------------------------------------------------------

async function audioGraph(media) {
  let context;
  let source;
  try {
    context = new AudioContext({ sampleRate: state.sampleRate }); // the browser resamples the microphone
    source = context.createMediaStreamSource(media);
  } catch {
    if (context) context.close();
    context = new AudioContext(); // the worklet resamples instead
    source = context.createMediaStreamSource(media);
  }
  await context.audioWorklet.addModule("static/pcm-worklet.js");
  const node = new AudioWorkletNode(context, "pcm-worklet", {
    processorOptions: { outRate: state.sampleRate, frameMs: FRAME_MS },
  });
  const mute = context.createGain();
  mute.gain.value = 0;
  node.connect(mute).connect(context.destination); // keeps the graph pulling samples
  return { context, source, node };
}

function streamUrl() {
  const url = new URL("v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.searchParams.set("sample_rate", String(state.sampleRate));
  if (state.apiKey) url.searchParams.set("api_key", state.apiKey);
  return url.toString();
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.type === "partial") {
    $("partial").textContent = message.text;
  } else if (message.type === "final") {
    $("partial").textContent = "";
    if (message.text) {
      const at = state.offset;
      state.segments.push({ start: at + message.start, end: at + message.end, text: message.text });
      render();
    }
  } else if (message.type === "error") {
    setStatus(message.error, true);
  }
}

async function startRecording() {
  $("record").disabled = true;
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    setStatus("No microphone: " + error.message, true);
    $("record").disabled = false;
    return;
  }
  const graph = await audioGraph(media);
  const socket = new WebSocket(streamUrl());
  socket.binaryType = "arraybuffer";
  const last = state.segments[state.segments.length - 1];
  state.offset = last ? last.end : 0;
  state.recording = { socket, media, ...graph };
  graph.node.port.onmessage = (event) => {
    if (event.data === "flushed") {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ eof: 1 }));
    } else if (socket.readyState === WebSocket.OPEN) {
      socket.send(event.data);
    }
  };
  socket.onopen = () => {
    graph.source.connect(graph.node);
    $("record").textContent = "Stop";
    $("record").className = "recording";
    $("record").disabled = false;
    setStatus("Listening…");
  };
  socket.onmessage = onMessage;
  socket.onclose = (event) => {
    stopAudio();
    state.recording = null;
    $("record").textContent = "Record";
    $("record").className = "primary";
    $("record").disabled = false;
    $("partial").textContent = "";
    if (event.code === 1000 || event.code === 1005) setStatus("");
    else if (!$("status").classList.contains("error")) setStatus(`The stream closed (${event.code} ${event.reason || ""}).`, true);
  };
}

function stopAudio() {
  const recording = state.recording;
  if (!recording) return;
  recording.media.getTracks().forEach((track) => track.stop());
  recording.source.disconnect();
  recording.context.close();
}

function stopRecording() {
  const recording = state.recording;
  if (!recording) return;
  $("record").disabled = true;
  setStatus("Finishing…");
  recording.media.getTracks().forEach((track) => track.stop());
  recording.node.port.postMessage("flush"); // the worklet sends what it holds, then "flushed" -> eof
}

// ---- files ----------------------------------------------------------------------------------------

async function transcribeFile() {
  const file = $("file").files[0];
  if (!file) {
    setStatus("Choose an audio file first.", true, "file-status");
    return;
  }
  $("upload").disabled = true;
  setStatus(`Transcribing ${file.name}…`, false, "file-status");
  try {
    const response = await fetch("v1/transcribe?output_format=json", {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    if (!response.ok) {
      setStatus(await errorText(response), true, "file-status");
      return;
    }
    const result = await response.json();
    state.segments = result.segments.map((s) => ({ start: s.start, end: s.end, text: s.text }));
    render();
    setStatus(`${file.name}: ${result.duration.toFixed(1)} s of audio.`, false, "file-status");
  } catch (error) {
    setStatus("The upload failed: " + error.message, true, "file-status");
  } finally {
    $("upload").disabled = false;
  }
}

// ---- wiring ---------------------------------------------------------------------------------------

$("record").addEventListener("click", () => (state.recording && state.recording.socket.readyState === WebSocket.OPEN ? stopRecording() : startRecording()));
$("upload").addEventListener("click", transcribeFile);
$("download-srt").addEventListener("click", () => download("srt"));
$("download-vtt").addEventListener("click", () => download("vtt"));
$("clear").addEventListener("click", () => {
  state.segments = [];
  render();
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.apiKey = $("key").value.trim();
  sessionStorage.setItem("harken_api_key", state.apiKey);
  loadModel();
});
loadModel();

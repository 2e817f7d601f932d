"""A self-contained HTML page that replays landings in 3-D, for offline viewing.

The page embeds the flight data as JSON and draws it with its own inline script on a 2-D
canvas (a small perspective projection, no WebGL), so it needs no network and no other
file. Its Content-Security-Policy forbids every fetch, so a browser loads nothing beyond
the page itself. Drag to orbit, use the wheel to zoom, and the bar at the bottom to play,
pause and scrub. A fragment such as ``#t=0.5`` opens the page paused at that fraction of
the flight.
"""

from __future__ import annotations

import html
import json
import pathlib
from collections.abc import Mapping

import numpy as np

from diffland.viz.flight import FlightRecord

BODY_COLOUR = "#e6e6e6"
"""Colour of the vehicles' bodies."""
TRAJECTORY_COLOURS = ("#4cc9f0", "#f72585", "#b5e48c", "#ffb703", "#9d4edd", "#ff6b35")
"""Colours of the landers' paths, in turn."""
BACKGROUND_COLOUR = "#0b0f17"


def _lander_data(record: FlightRecord, lander: int) -> dict:
    last = int(record.touchdown_index()[lander])
    return {
        "p": np.round(record.position[lander, : last + 1], 2).tolist(),
        "u": np.round(record.up[lander, : last + 1], 4).tolist(),
        "th": np.round(record.throttle[lander, : last + 1], 3).tolist(),
    }


def viewer_data(records: Mapping[str, FlightRecord], title: str, landers: int = 8) -> dict:
    """Return the JSON-ready flight data of the page: per controller, up to ``landers``."""
    if not records:
        raise ValueError("no flight records to show: pass at least one controller's record.")
    first = next(iter(records.values()))
    return {
        "title": title,
        "vehicle": first.vehicle,
        "dt": float(first.time[1] - first.time[0]) if first.time.size > 1 else 1.0,
        "bodyLength": 40.0,
        "padRadius": 10.0,
        "colours": {
            "body": BODY_COLOUR,
            "background": BACKGROUND_COLOUR,
            "paths": list(TRAJECTORY_COLOURS),
        },
        "runs": [
            {
                "name": name,
                "landers": [
                    _lander_data(record, lander) for lander in range(min(landers, record.landers))
                ],
            }
            for name, record in records.items()
        ],
    }


def write_viewer(
    records: Mapping[str, FlightRecord],
    path: str | pathlib.Path,
    title: str = "diffland landing replay",
    landers: int = 8,
) -> pathlib.Path:
    """Write the replay page of ``records`` (controller name to record) and return its path."""
    data = viewer_data(records, title, landers)
    # "<" is escaped so that no string in the data can close the script element.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    page = (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__BACKGROUND__", BACKGROUND_COLOUR)
        .replace("__DATA__", payload)
        .replace("__SCRIPT__", _SCRIPT)
    )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  html, body { margin: 0; height: 100%; background: __BACKGROUND__; overflow: hidden;
    font: 13px sans-serif; color: #9aa4b2; }
  #scene { display: block; width: 100%; height: calc(100% - 44px); cursor: grab; }
  #bar { height: 44px; display: flex; align-items: center; gap: 10px; padding: 0 10px;
    background: #151b26; box-sizing: border-box; }
  #bar button, #bar select { background: #1c2330; color: #9aa4b2; border: 1px solid #2c3646;
    border-radius: 4px; padding: 4px 10px; font: inherit; }
  #scrub { flex: 1; accent-color: #4a5568; }
  #clock { min-width: 7em; text-align: right; font-variant-numeric: tabular-nums; }
  #label { position: absolute; top: 8px; left: 12px; pointer-events: none; }
</style>
</head>
<body>
<canvas id="scene"></canvas>
<div id="label"></div>
<div id="bar">
  <button id="play" type="button">Pause</button>
  <input id="scrub" type="range" min="0" max="1000" value="0">
  <span id="clock"></span>
  <select id="run" title="controller"></select>
  <select id="stretch" title="horizontal scale">
    <option value="1">horizontal x1</option>
    <option value="5">horizontal x5</option>
    <option value="20" selected>horizontal x20</option>
  </select>
</div>
<script id="flight-data" type="application/json">__DATA__</script>
<script>
__SCRIPT__
</script>
</body>
</html>
"""

_SCRIPT = r"""
"use strict";
const data = JSON.parse(document.getElementById("flight-data").textContent);
const canvas = document.getElementById("scene");
const context = canvas.getContext("2d");
const playButton = document.getElementById("play");
const scrub = document.getElementById("scrub");
const clock = document.getElementById("clock");
const runSelect = document.getElementById("run");
const stretchSelect = document.getElementById("stretch");
document.getElementById("label").textContent = data.title + " (" + data.vehicle + ")";

data.runs.forEach(function (run, index) {
  const option = document.createElement("option");
  option.value = String(index);
  option.textContent = run.name;
  runSelect.appendChild(option);
});

// Camera: orbit around a target point, z up. Angles in radians, distance in metres.
const view = { azimuth: -0.9, elevation: 0.35, distance: 1, target: [0, 0, 0] };
let run = data.runs[0];
let duration = 0;
let time = 0;
let playing = true;
let lastFrame = null;

function stretch() { return Number(stretchSelect.value); }

function scaled(point) {
  const s = stretch();
  return [point[0] * s, point[1] * s, point[2]];
}

function fitCamera() {
  let lowest = Infinity, highest = -Infinity, widest = 0;
  duration = 0;
  run.landers.forEach(function (lander) {
    duration = Math.max(duration, (lander.p.length - 1) * data.dt);
    lander.p.forEach(function (point) {
      const p = scaled(point);
      lowest = Math.min(lowest, p[2]);
      highest = Math.max(highest, p[2]);
      widest = Math.max(widest, Math.abs(p[0]), Math.abs(p[1]));
    });
  });
  view.target = [0, 0, (lowest + highest) / 2];
  view.distance = 1.3 * Math.max(highest - lowest, 2 * widest, 100);
}

function cameraBasis() {
  const ce = Math.cos(view.elevation), se = Math.sin(view.elevation);
  const eye = [
    view.target[0] + view.distance * ce * Math.cos(view.azimuth),
    view.target[1] + view.distance * ce * Math.sin(view.azimuth),
    view.target[2] + view.distance * se,
  ];
  const forward = normalize(subtract(view.target, eye));
  const right = normalize(cross(forward, [0, 0, 1]));
  const up = cross(right, forward);
  return { eye: eye, forward: forward, right: right, up: up };
}

function subtract(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
function cross(a, b) {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}
function normalize(a) {
  const n = Math.hypot(a[0], a[1], a[2]) || 1;
  return [a[0] / n, a[1] / n, a[2] / n];
}

// Perspective projection of a world point; null when it lies behind the camera.
function project(point, basis, focal) {
  const d = subtract(scaled(point), basis.eye);
  const depth = dot(d, basis.forward);
  if (depth < 1e-3 * view.distance) return null;
  return [
    canvas.width / 2 + focal * dot(d, basis.right) / depth,
    canvas.height / 2 - focal * dot(d, basis.up) / depth,
    depth,
  ];
}

function line(a, b, colour, width) {
  if (!a || !b) return;
  context.strokeStyle = colour;
  context.lineWidth = width;
  context.beginPath();
  context.moveTo(a[0], a[1]);
  context.lineTo(b[0], b[1]);
  context.stroke();
}

function drawGround(basis, focal) {
  const half = Math.max(view.distance * 0.4, 60) / stretch();
  const step = half / 5;
  for (let i = -5; i <= 5; i++) {
    line(project([-half, i * step, 0], basis, focal), project([half, i * step, 0], basis, focal),
      "#1f2937", 1);
    line(project([i * step, -half, 0], basis, focal), project([i * step, half, 0], basis, focal),
      "#1f2937", 1);
  }
  let previous = null;
  for (let k = 0; k <= 48; k++) {
    const angle = 2 * Math.PI * k / 48;
    const point = project([data.padRadius * Math.cos(angle), data.padRadius * Math.sin(angle), 0],
      basis, focal);
    line(previous, point, "#f0c020", 2);
    previous = point;
  }
}

function drawLander(lander, index, basis, focal) {
  const colour = data.colours.paths[index % data.colours.paths.length];
  const last = lander.p.length - 1;
  const current = Math.min(Math.floor(time / data.dt), last);
  // The whole path faintly, the part flown so far brightly.
  context.globalAlpha = 0.25;
  let previous = null;
  for (let k = 0; k <= last; k++) {
    const point = project(lander.p[k], basis, focal);
    line(previous, point, colour, 1.5);
    previous = point;
  }

  context.globalAlpha = 1;
  previous = null;
  for (let k = 0; k <= current; k++) {
    const point = project(lander.p[k], basis, focal);
    line(previous, point, colour, 2.5);
    previous = point;
  }

  // The body along its axis, centred on the centre of mass, and the exhaust below it.
  const centre = lander.p[current];
  const axis = lander.u[current];
  const half = data.bodyLength / 2;
  const nose = [centre[0] + axis[0] * half, centre[1] + axis[1] * half, centre[2] + axis[2] * half];
  const tail = [centre[0] - axis[0] * half, centre[1] - axis[1] * half, centre[2] - axis[2] * half];
  const burning = current < last ? lander.th[current] : 0;
  const flameLength = data.bodyLength * burning;
  const flame = [tail[0] - axis[0] * flameLength, tail[1] - axis[1] * flameLength,
    tail[2] - axis[2] * flameLength];
  const tailOnScreen = project(tail, basis, focal);
  if (!tailOnScreen) return;
  const width = Math.max(3, Math.min(14, focal * 4 / tailOnScreen[2]));
  line(project(flame, basis, focal), tailOnScreen, "#ff9a1f", width * 0.8);
  line(tailOnScreen, project(nose, basis, focal), data.colours.body, width);
}

function draw() {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  context.fillStyle = data.colours.background;
  context.fillRect(0, 0, canvas.width, canvas.height);
  const basis = cameraBasis();
  const focal = 0.9 * Math.min(canvas.width, canvas.height);
  context.lineCap = "round";
  drawGround(basis, focal);
  run.landers.forEach(function (lander, index) { drawLander(lander, index, basis, focal); });
  scrub.value = String(Math.round(1000 * (duration > 0 ? time / duration : 0)));
  clock.textContent = "t = " + time.toFixed(1) + " s";
  playButton.textContent = playing ? "Pause" : "Play";
}

function tick(now) {
  if (playing && lastFrame !== null) {
    time += (now - lastFrame) / 1000;
    if (time > duration) time = 0;
  }
  lastFrame = now;
  draw();
  window.requestAnimationFrame(tick);
}

playButton.addEventListener("click", function () { playing = !playing; draw(); });
scrub.addEventListener("input", function () {
  playing = false;
  time = duration * Number(scrub.value) / 1000;
  draw();
});
runSelect.addEventListener("change", function () {
  run = data.runs[Number(runSelect.value)];
  fitCamera();
  time = Math.min(time, duration);
  draw();
});
stretchSelect.addEventListener("change", function () { fitCamera(); draw(); });
window.addEventListener("keydown", function (event) {
  if (event.code === "Space") { playing = !playing; event.preventDefault(); draw(); }
});
window.addEventListener("resize", draw);

let dragging = null;
canvas.addEventListener("mousedown", function (event) {
  dragging = [event.clientX, event.clientY];
  canvas.style.cursor = "grabbing";
});
window.addEventListener("mouseup", function () { dragging = null; canvas.style.cursor = "grab"; });
window.addEventListener("mousemove", function (event) {
  if (!dragging) return;
  view.azimuth -= (event.clientX - dragging[0]) * 0.01;
  view.elevation = Math.max(-1.5, Math.min(1.5,
    view.elevation + (event.clientY - dragging[1]) * 0.01));
  dragging = [event.clientX, event.clientY];
  draw();
});
canvas.addEventListener("wheel", function (event) {
  view.distance *= Math.exp(event.deltaY * 0.001);
  event.preventDefault();
  draw();
}, { passive: false });

fitCamera();
// "#t=0.5" opens the page paused at half of the flight.
const start = /[#&]t=([0-9.]+)/.exec(window.location.hash);
if (start) {
  playing = false;
  time = duration * Math.min(1, Math.max(0, Number(start[1])));
}
draw();
window.requestAnimationFrame(tick);
"""

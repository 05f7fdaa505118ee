// Turnaround over the last 30 days for the signed-in site, or the reading
// network's sites together, drawn as SVG in the page (no library, no CDN): the
// distribution of turnarounds per AI result, the daily median and 90th
// percentile, and the mean queue length over the hours of the day.

import { api } from "./api.js";
import { $, AI_LABELS, el } from "./format.js";
import { session, worklistPath } from "./session.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 360;
const HEIGHT = 180;
const PAD = { left: 36, right: 8, top: 10, bottom: 34 };
const COLOURS = {
  suspected: "#b42318",
  possible: "#8a5200",
  "no-finding": "#1f7a3f",
  "not-analysed": "#5b6878",
  "awaiting-analysis": "#34506e",
};

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function chart(title, description) {
  return svg(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart", "aria-label": `${title}: ${description}` },
    svg("title", {}, title),
  );
}

function axes(root, maxY, unit) {
  const bottom = HEIGHT - PAD.bottom;
  root.append(
    svg("line", { x1: PAD.left, y1: bottom, x2: WIDTH - PAD.right, y2: bottom, class: "axis" }),
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: bottom, class: "axis" }),
    svg("text", { x: PAD.left - 4, y: PAD.top + 8, class: "tick", "text-anchor": "end" }, formatNumber(maxY)),
    svg("text", { x: PAD.left - 4, y: bottom, class: "tick", "text-anchor": "end" }, "0"),
    svg("text", { x: PAD.left + 4, y: PAD.top + 8, class: "tick" }, unit),
  );
}

function formatNumber(value) {
  return value >= 10 ? String(Math.round(value)) : value.toFixed(1);
}

function binLabel(upper, index, bounds) {
  if (index === bounds.length) return `>${bounds[bounds.length - 1]}h`;
  return upper < 1 ? `≤${upper * 60}m` : `≤${upper}h`;
}

// Grouped bars: one group per turnaround bin, one bar per AI result.
function distributionChart(plots) {
  const root = chart("Turnaround per AI result", "studies reported, by time from arrival to report");
  const series = plots.distribution;
  const bins = plots.bin_upper_hours.length + 1;
  const maxY = Math.max(1, ...series.flatMap((s) => s.counts));
  axes(root, maxY, "studies");
  const span = (WIDTH - PAD.left - PAD.right) / bins;
  const bar = span / Math.max(1, series.length + 1);
  const bottom = HEIGHT - PAD.bottom;
  for (let bin = 0; bin < bins; bin += 1) {
    const x0 = PAD.left + bin * span;
    series.forEach((s, index) => {
      const height = ((bottom - PAD.top) * s.counts[bin]) / maxY;
      root.append(
        svg(
          "rect",
          {
            x: x0 + (index + 0.5) * bar,
            y: bottom - height,
            width: bar,
            height,
            fill: COLOURS[s.ai_result] || "#34506e",
            "data-series": s.ai_result,
          },
          svg("title", {}, `${AI_LABELS[s.ai_result] || s.ai_result}: ${s.counts[bin]}`),
        ),
      );
    });
    root.append(
      svg("text", { x: x0 + span / 2, y: bottom + 12, class: "tick", "text-anchor": "middle" },
        binLabel(plots.bin_upper_hours[bin], bin, plots.bin_upper_hours)),
    );
  }
  series.forEach((s, index) => {
    root.append(
      svg("rect", { x: PAD.left + index * 90, y: HEIGHT - 14, width: 8, height: 8, fill: COLOURS[s.ai_result] || "#34506e" }),
      svg("text", { x: PAD.left + index * 90 + 11, y: HEIGHT - 6, class: "tick" }, AI_LABELS[s.ai_result] || s.ai_result),
    );
  });
  return root;
}

// Two lines over the days: median and 90th percentile of the turnaround, hours.
function dailyChart(plots) {
  const root = chart("Daily turnaround", "median and 90th percentile, in hours, by day of arrival");
  const days = plots.daily.filter((day) => day.median_seconds !== null);
  const maxY = Math.max(0.1, ...days.map((day) => day.p90_seconds / 3600));
  axes(root, maxY, "hours");
  const bottom = HEIGHT - PAD.bottom;
  const step = (WIDTH - PAD.left - PAD.right) / Math.max(1, days.length);
  const point = (index, seconds) => [
    PAD.left + step * (index + 0.5),
    bottom - ((bottom - PAD.top) * seconds) / 3600 / maxY,
  ];
  for (const [key, colour, name] of [["median_seconds", "#1b5fa6", "median"], ["p90_seconds", "#b42318", "p90"]]) {
    const points = days.map((day, index) => point(index, day[key]));
    if (points.length > 1) {
      root.append(svg("polyline", { points: points.map((p) => p.join(",")).join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
    }
    points.forEach(([x, y], index) => {
      root.append(
        svg("circle", { cx: x, cy: y, r: 3, fill: colour, "data-series": name },
          svg("title", {}, `${days[index].day} ${name}: ${(days[index][key] / 3600).toFixed(2)} h`)),
      );
    });
  }
  if (days.length) {
    root.append(
      svg("text", { x: PAD.left, y: bottom + 12, class: "tick" }, days[0].day),
      svg("text", { x: WIDTH - PAD.right, y: bottom + 12, class: "tick", "text-anchor": "end" }, days[days.length - 1].day),
    );
  }
  root.append(
    svg("text", { x: PAD.left, y: HEIGHT - 6, class: "tick", fill: "#1b5fa6" }, "— median"),
    svg("text", { x: PAD.left + 80, y: HEIGHT - 6, class: "tick", fill: "#b42318" }, "— 90th percentile"),
  );
  return root;
}

// Bars over the hours of the day: the mean number of studies waiting.
function queueChart(plots) {
  const root = chart("Queue over the day", `mean number of studies waiting at each hour (${plots.time_zone || "UTC"})`);
  const values = plots.queue_by_hour;
  const maxY = Math.max(1, ...values);
  axes(root, maxY, "waiting");
  const bottom = HEIGHT - PAD.bottom;
  const span = (WIDTH - PAD.left - PAD.right) / 24;
  values.forEach((value, hour) => {
    const height = ((bottom - PAD.top) * value) / maxY;
    root.append(
      svg("rect", { x: PAD.left + hour * span + 1, y: bottom - height, width: span - 2, height, fill: "#34506e", "data-hour": hour },
        svg("title", {}, `${String(hour).padStart(2, "0")}:00 ${plots.time_zone || "UTC"}: ${value.toFixed(1)} waiting`)),
    );
    if (hour % 6 === 0) {
      root.append(svg("text", { x: PAD.left + hour * span, y: bottom + 12, class: "tick" }, `${String(hour).padStart(2, "0")}h`));
    }
  });
  return root;
}

export async function refreshAnalytics() {
  const panel = $("analytics");
  if (!session.token) {
    panel.hidden = true;
    return;
  }
  let plots;
  try {
    plots = await api("GET", worklistPath("/analytics/plots"));
  } catch (error) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  $("analytics-charts").replaceChildren(
    el("figure", {}, distributionChart(plots)),
    el("figure", {}, dailyChart(plots)),
    el("figure", {}, queueChart(plots)),
  );
}

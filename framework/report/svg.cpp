#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace llmtk::report {

namespace {
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}
std::string short_num(double v) {
  char buf[32];
  const double a = std::abs(v);
  if (a >= 1e15) std::snprintf(buf, sizeof buf, "%.3ge15", v / 1e15);
  else if (a >= 1e12) std::snprintf(buf, sizeof buf, "%.3gT", v / 1e12);
  else if (a >= 1e9) std::snprintf(buf, sizeof buf, "%.3gG", v / 1e9);
  else if (a >= 1e6) std::snprintf(buf, sizeof buf, "%.3gM", v / 1e6);
  else if (a >= 1e4) std::snprintf(buf, sizeof buf, "%.3gk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
}  // namespace

std::string format_number(double v, const char* format) {
  if (!std::isfinite(v)) return "–";
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string bar_chart(const std::string& title, const std::vector<Bar>& bars, const std::string& unit) {
  const double W = 640, H = 260, left = 60, bottom = 60, top = 30;
  double mx = 0;
  for (const auto& b : bars) mx = std::max(mx, b.value);
  if (mx <= 0) mx = 1;
  const double bw = bars.empty() ? 0 : (W - left - 10) / double(bars.size());
  std::string s = "<svg xmlns='http://www.w3.org/2000/svg' width='" + num(W) + "' height='" + num(H) +
                  "' role='img'><title>" + escape_html(title) + "</title>";
  s += "<text x='" + num(W / 2) + "' y='18' text-anchor='middle' class='t'>" + escape_html(title) + "</text>";
  const double ph = H - top - bottom;
  for (int g = 0; g <= 4; ++g) {
    const double y = top + ph * (1 - g / 4.0);
    s += "<line x1='" + num(left) + "' x2='" + num(W - 10) + "' y1='" + num(y) + "' y2='" + num(y) + "' class='grid'/>";
    s += "<text x='" + num(left - 4) + "' y='" + num(y + 4) + "' text-anchor='end' class='a'>" + short_num(mx * g / 4) + "</text>";
  }
  for (std::size_t i = 0; i < bars.size(); ++i) {
    const double h = ph * bars[i].value / mx, x = left + bw * double(i);
    s += "<rect x='" + num(x + 1) + "' y='" + num(top + ph - h) + "' width='" + num(std::max(bw - 2, 1.0)) +
         "' height='" + num(h) + "' fill='#1f77b4'><title>" + escape_html(bars[i].label) + ": " +
         short_num(bars[i].value) + unit + "</title></rect>";
    if (bars.size() <= 24 || i % (bars.size() / 12 + 1) == 0)
      s += "<text transform='translate(" + num(x + bw / 2) + "," + num(top + ph + 8) + ") rotate(45)' class='a'>" +
           escape_html(bars[i].label) + "</text>";
  }
  return s + "</svg>";
}

std::string line_chart(const std::string& title, const std::vector<Series>& series, const std::string& x_label,
                       const std::string& y_label, bool log_y) {
  // The legend's column is as wide as its longest name (about 6.5 px a character at the axes' size).
  std::size_t longest = 0;
  for (const auto& se : series) longest = std::max(longest, se.name.size());
  const double right = std::clamp(30.0 + 6.5 * double(longest), 120.0, 420.0);
  const double W = 480 + right, H = std::max(300.0, 30.0 + 16.0 * double(series.size()) + 20), left = 78, top = 30,
               bottom = 44;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double v) { return log_y ? std::log10(std::max(v, 1e-12)) : v; };
  for (const auto& se : series)
    for (std::size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) {
      if (!std::isfinite(se.y[i])) continue;
      x0 = std::min(x0, se.x[i]), x1 = std::max(x1, se.x[i]);
      y0 = std::min(y0, ty(se.y[i])), y1 = std::max(y1, ty(se.y[i]));
    }
  if (!(x1 > x0)) x0 = 0, x1 = std::max(1.0, x1);
  if (!(y1 > y0)) y0 = std::isfinite(y0) ? y0 - 1 : 0, y1 = y0 + 2;
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double v) { return left + pw * (v - x0) / (x1 - x0); };
  auto py = [&](double v) { return top + ph * (1 - (ty(v) - y0) / (y1 - y0)); };
  std::string s = "<svg xmlns='http://www.w3.org/2000/svg' width='" + num(W) + "' height='" + num(H) +
                  "' role='img'><title>" + escape_html(title) + "</title>";
  s += "<text x='" + num(left + pw / 2) + "' y='18' text-anchor='middle' class='t'>" + escape_html(title) + "</text>";
  for (int g = 0; g <= 4; ++g) {
    const double y = top + ph * (1 - g / 4.0), v = y0 + (y1 - y0) * g / 4.0;
    s += "<line x1='" + num(left) + "' x2='" + num(left + pw) + "' y1='" + num(y) + "' y2='" + num(y) + "' class='grid'/>";
    s += "<text x='" + num(left - 4) + "' y='" + num(y + 4) + "' text-anchor='end' class='a'>" +
         short_num(log_y ? std::pow(10.0, v) : v) + "</text>";
    const double x = left + pw * g / 4.0;
    s += "<text x='" + num(x) + "' y='" + num(top + ph + 16) + "' text-anchor='middle' class='a'>" +
         short_num(x0 + (x1 - x0) * g / 4.0) + "</text>";
  }
  s += "<text x='" + num(left + pw / 2) + "' y='" + num(H - 6) + "' text-anchor='middle' class='a'>" + escape_html(x_label) + "</text>";
  s += "<text transform='translate(12," + num(top + ph / 2) + ") rotate(-90)' text-anchor='middle' class='a'>" +
       escape_html(y_label) + "</text>";
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& se = series[k];
    std::string pts;
    for (std::size_t i = 0; i < se.x.size() && i < se.y.size(); ++i)
      if (std::isfinite(se.y[i])) pts += num(px(se.x[i])) + "," + num(py(se.y[i])) + " ";
    const char* c = kColors[k % 8];
    // Past eight series the colours repeat, dashed: every line stays distinguishable.
    const std::string dash = k >= 8 ? (k >= 16 ? " stroke-dasharray='2 3'" : " stroke-dasharray='6 3'") : "";
    s += "<polyline fill='none' stroke='" + std::string(c) + "' stroke-width='1.6'" + dash + " points='" + pts + "'/>";
    // Few points (an evaluation curve, a scaling plot): each marked, so a single one shows too.
    std::size_t shown = 0;
    for (std::size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) shown += std::isfinite(se.y[i]);
    if (shown <= 30)
      for (std::size_t i = 0; i < se.x.size() && i < se.y.size(); ++i)
        if (std::isfinite(se.y[i]))
          s += "<circle cx='" + num(px(se.x[i])) + "' cy='" + num(py(se.y[i])) + "' r='2.2' fill='" + c + "'/>";
    s += "<rect x='" + num(W - right + 10) + "' y='" + num(top + 16 * double(k)) + "' width='10' height='10' fill='" + c + "'/>";
    s += "<text x='" + num(W - right + 24) + "' y='" + num(top + 9 + 16 * double(k)) + "' class='a'>" + escape_html(se.name) + "</text>";
  }
  return s + "</svg>";
}

std::string heat_map(const std::string& title, const std::vector<std::string>& rows, const std::vector<double>& x,
                     const std::vector<std::vector<double>>& values, const std::string& x_label, bool log_scale) {
  const double W = 640, left = 110, right = 70, top = 30, bottom = 40;
  const double cell_h = rows.empty() ? 0 : std::clamp(220.0 / double(rows.size()), 8.0, 24.0);
  const double H = top + bottom + cell_h * double(rows.size());
  auto scaled = [&](double v) { return log_scale ? (v > 0 ? std::log10(v) : NAN) : v; };
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& r : values)
    for (double v : r)
      if (const double t = scaled(v); std::isfinite(t)) lo = std::min(lo, t), hi = std::max(hi, t);
  if (!(hi > lo)) hi = lo + 1;  // one value (or none): one colour
  std::string s = "<svg xmlns='http://www.w3.org/2000/svg' width='" + num(W) + "' height='" + num(H) +
                  "' role='img'><title>" + escape_html(title) + "</title>";
  s += "<text x='" + num(W / 2) + "' y='18' text-anchor='middle' class='t'>" + escape_html(title) + "</text>";
  const double pw = W - left - right, cw = x.empty() ? 0 : pw / double(x.size());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const double y = top + cell_h * double(r);
    s += "<text x='" + num(left - 6) + "' y='" + num(y + cell_h * 0.7) + "' text-anchor='end' class='a'>" + escape_html(rows[r]) +
         "</text>";
    for (std::size_t c = 0; c < x.size() && r < values.size() && c < values[r].size(); ++c) {
      const double t = scaled(values[r][c]);
      if (!std::isfinite(t)) continue;
      // From a pale yellow (low) to a dark blue (high), through green: readable in print.
      const double f = (t - lo) / (hi - lo);
      const int red = int(255 - 230 * f), green = int(250 - 150 * f), blue = int(200 - 70 * f + 60 * f * f);
      char colour[16];
      std::snprintf(colour, sizeof colour, "#%02x%02x%02x", std::clamp(red, 0, 255), std::clamp(green, 0, 255), std::clamp(blue, 0, 255));
      s += "<rect x='" + num(left + cw * double(c)) + "' y='" + num(y) + "' width='" + num(cw + 0.5) + "' height='" +
           num(cell_h + 0.5) + "' fill='" + colour + "'><title>" + escape_html(rows[r]) + " at " + short_num(x[c]) + ": " +
           short_num(values[r][c]) + "</title></rect>";
    }
  }
  // The x axis: the first, middle and last x; the scale's ends on the right.
  for (std::size_t c : {std::size_t(0), x.size() / 2, x.size() ? x.size() - 1 : 0})
    if (c < x.size())
      s += "<text x='" + num(left + cw * (double(c) + 0.5)) + "' y='" + num(H - bottom + 14) + "' text-anchor='middle' class='a'>" +
           short_num(x[c]) + "</text>";
  s += "<text x='" + num(left + pw / 2) + "' y='" + num(H - 6) + "' text-anchor='middle' class='a'>" + escape_html(x_label) + "</text>";
  auto value = [&](double t) { return short_num(log_scale ? std::pow(10.0, t) : t); };
  s += "<text x='" + num(W - right + 6) + "' y='" + num(top + 10) + "' class='a'>" + value(hi) + "</text>";
  s += "<text x='" + num(W - right + 6) + "' y='" + num(top + 22) + "' class='a'>dark</text>";
  s += "<text x='" + num(W - right + 6) + "' y='" + num(H - bottom - 12) + "' class='a'>" + value(lo) + "</text>";
  s += "<text x='" + num(W - right + 6) + "' y='" + num(H - bottom) + "' class='a'>light</text>";
  return s + "</svg>";
}

std::string html_page(const std::string& title, const std::string& body) {
  return "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>" + escape_html(title) +
         "</title><style>body{font:14px system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}"
         "h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}"
         "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}"
         "td.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:6px;white-space:pre-wrap;"
         "max-height:8em;overflow:auto;font-size:12px}svg{margin:6px 12px 6px 0}svg .t{font-size:13px;font-weight:600}"
         "svg .a{font-size:10px;fill:#444}svg .grid{stroke:#eee}.charts{display:flex;flex-wrap:wrap}</style></head><body>" +
         body + "</body></html>\n";
}

}  // namespace llmtk::report

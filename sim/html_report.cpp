// The HTML report: one self-contained file, plots drawn here as inline SVG (no script,
// no stylesheet or font from the network), so it opens anywhere and can be archived.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "sim/report.h"
#include "troupe/error.h"

namespace troupe::sim {

namespace {

struct line {
  std::string label;
  std::string color;
  std::vector<std::pair<double, double>> pts;  // (x, y), x ascending
};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

// A round tick step (1, 2 or 5 times a power of ten) giving about five ticks to `span`.
double tick_step(double span) {
  if (!(span > 0)) return 1;
  const double raw = span / 5;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

std::string svg_plot(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                     const std::vector<line>& lines) {
  const double W = 640, H = 320, L = 70, R = 20, T = 30, B = 50;  // size and margins, px
  double xmax = 0, ymax = 0;
  for (const auto& l : lines)
    for (const auto& [x, y] : l.pts) {
      xmax = std::max(xmax, x);
      ymax = std::max(ymax, y);
    }
  const double xs = tick_step(xmax), ys = tick_step(ymax);
  xmax = std::max(xs, std::ceil(xmax / xs) * xs);
  ymax = std::max(ys, std::ceil(ymax / ys) * ys);
  auto X = [&](double x) { return L + (W - L - R) * x / xmax; };
  auto Y = [&](double y) { return H - B - (H - T - B) * y / ymax; };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' "
    << "font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n";
  o << "<text x='" << W / 2 << "' y='18' text-anchor='middle' font-size='14'>" << escape(title) << "</text>\n";
  for (double x = 0; x <= xmax * 1.0001; x += xs)
    o << "<line x1='" << X(x) << "' y1='" << T << "' x2='" << X(x) << "' y2='" << H - B << "' stroke='#ddd'/><text x='"
      << X(x) << "' y='" << H - B + 15 << "' text-anchor='middle'>" << num(x) << "</text>\n";
  for (double y = 0; y <= ymax * 1.0001; y += ys)
    o << "<line x1='" << L << "' y1='" << Y(y) << "' x2='" << W - R << "' y2='" << Y(y) << "' stroke='#ddd'/><text x='"
      << L - 5 << "' y='" << Y(y) + 4 << "' text-anchor='end'>" << num(y) << "</text>\n";
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 12 << "' text-anchor='middle'>" << escape(xlabel)
    << "</text>\n<text transform='translate(16," << (T + H - B) / 2 << ") rotate(-90)' text-anchor='middle'>"
    << escape(ylabel) << "</text>\n";
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& l = lines[i];
    o << "<polyline fill='none' stroke='" << l.color << "' stroke-width='1.5' points='";
    for (const auto& [x, y] : l.pts) o << num(X(x)) << ',' << num(Y(y)) << ' ';
    o << "'/>\n";
    o << "<text x='" << W - R - 5 << "' y='" << T + 14 * (i + 1) << "' text-anchor='end' fill='" << l.color << "'>"
      << escape(l.label) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

// An empirical CDF thinned to at most ~400 points.
line cdf(std::vector<double> v, const std::string& label, const std::string& color) {
  line l{label, color, {}};
  if (v.empty()) return l;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const size_t stride = std::max<size_t>(1, n / 400);
  l.pts.emplace_back(v[0], 0.0);
  for (size_t i = 0; i < n; i += stride) l.pts.emplace_back(v[i], double(i + 1) / double(n));
  l.pts.emplace_back(v[n - 1], 1.0);
  return l;
}

}  // namespace

void write_html_report(const std::string& path, const sim_result& r, const summary& s, const std::string& title) {
  std::ofstream out(path);
  if (!out) throw error(error_kind::failed, "cannot write " + path, "report-html");
  std::vector<double> ttft, tpot, e2e;
  std::vector<std::vector<double>> tenant_ttft(r.tenants.size());
  for (const auto& q : r.requests) {
    if (q.status != request_status::finished) continue;
    if (q.tenant < tenant_ttft.size()) tenant_ttft[q.tenant].push_back(q.ttft());
    ttft.push_back(q.ttft());
    e2e.push_back(q.e2e());
    if (q.generated > 1) tpot.push_back(q.tpot());
  }
  line tok{"output tokens/s", "#1f77b4", {}}, in{"prompt tokens/s", "#ff7f0e", {}};
  line queue{"mean queue length", "#d62728", {}}, kv{"mean KV utilization %", "#2ca02c", {}};
  for (size_t i = 0; i < r.series.size(); ++i) {
    const auto& b = r.series[i];
    const double t = (double(i) + 0.5) * r.bucket_width;
    tok.pts.emplace_back(t, b.tokens_out / r.bucket_width);
    in.pts.emplace_back(t, b.tokens_in / r.bucket_width);
    if (b.steps > 0) {
      queue.pts.emplace_back(t, b.queue_sum / b.steps);
      kv.pts.emplace_back(t, 100 * b.kv_sum / b.steps);
    }
  }
  // With several tenants, the TTFT plot shows each one's CDF beside the total.
  static const char* palette[] = {"#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::vector<line> ttft_lines{cdf(ttft, "TTFT, all", "#1f77b4")};
  if (r.tenants.size() > 1)
    for (size_t t = 0; t < r.tenants.size(); ++t)
      ttft_lines.push_back(cdf(tenant_ttft[t], "TTFT, " + r.tenants[t].name, palette[t % 6]));
  out << "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>" << escape(title) << "</title>\n"
      << "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}pre{background:#f6f6f6;padding:1em}"
      << "svg{margin:4px;border:1px solid #eee}</style></head><body>\n"
      << "<h1>" << escape(title) << "</h1>\n<h2>Summary</h2>\n<pre>" << escape(summary_table(s)) << "</pre>\n"
      << "<h2>Latency</h2>\n"
      << svg_plot("TTFT CDF", "time to first token (s)", "fraction of requests", ttft_lines)
      << svg_plot("TPOT CDF", "time per output token (s)", "fraction of requests", {cdf(tpot, "TPOT", "#ff7f0e")})
      << svg_plot("End-to-end CDF", "end-to-end latency (s)", "fraction of requests", {cdf(e2e, "e2e", "#2ca02c")})
      << "<h2>Over time</h2>\n"
      << svg_plot("Throughput", "simulated time (s)", "tokens/s", {tok, in})
      << svg_plot("Queue length", "simulated time (s)", "requests waiting", {queue})
      << svg_plot("KV cache utilization", "simulated time (s)", "% of blocks", {kv}) << "\n</body></html>\n";
}

}  // namespace troupe::sim

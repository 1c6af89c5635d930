// Self-contained SVG charts for HTML reports (no script, no network): bar charts for histograms
// and line charts for training curves. Plain string building; the numbers are the whole input.
#pragma once
#include <string>
#include <vector>

namespace llmtk::report {

struct Bar {
  std::string label;
  double value = 0;
};
std::string bar_chart(const std::string& title, const std::vector<Bar>& bars, const std::string& unit = "");

struct Series {
  std::string name;
  std::vector<double> x, y;
};
std::string line_chart(const std::string& title, const std::vector<Series>& series,
                       const std::string& x_label, const std::string& y_label, bool log_y = false);

// A heat map: one row per name (top to bottom in the order given), one column per x, each cell
// coloured by its value on one scale (light: low, dark: high; log10 when log_scale). A value that
// is not finite is left blank. values[row][column].
std::string heat_map(const std::string& title, const std::vector<std::string>& rows, const std::vector<double>& x,
                     const std::vector<std::vector<double>>& values, const std::string& x_label, bool log_scale = false);

// A number for a table cell: printf's `format` (e.g. "%.4f"), or "–" when it is not finite.
std::string format_number(double v, const char* format);

// Escapes &, <, >, " for HTML text and attributes.
std::string escape_html(const std::string& s);
// A page with the report's shared style; `body` is HTML.
std::string html_page(const std::string& title, const std::string& body);

}  // namespace llmtk::report

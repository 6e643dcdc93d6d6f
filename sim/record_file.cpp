#include "sim/record_file.h"

#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>

#include "troupe/error.h"

namespace troupe::sim {

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return {};
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char ch : line) {
    if (ch == '"') {
      quoted = !quoted;
    } else if (ch == ',' && !quoted) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur.push_back(ch);
    }
  }
  out.push_back(trim(cur));
  return out;
}

std::string where(const std::string& path, size_t line_no) { return path + ":" + std::to_string(line_no); }

}  // namespace

bool is_jsonl_path(const std::string& path) {
  auto ends = [&](const std::string& suf) {
    return path.size() >= suf.size() && path.compare(path.size() - suf.size(), suf.size(), suf) == 0;
  };
  return ends(".jsonl") || ends(".ndjson") || ends(".json");
}

void for_each_record(const std::string& path, const std::vector<std::string>& fields, const record_fn& fn) {
  std::ifstream in(path);
  if (!in) throw error(error_kind::failed, "cannot open " + path, "file");
  const bool jsonl = is_jsonl_path(path);
  std::vector<int> column;  // CSV: column index of each field, -1 when absent
  std::vector<std::string> values(fields.size());
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    if (jsonl) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(t);
      } catch (const nlohmann::json::exception& e) {
        throw error(error_kind::failed, where(path, line_no) + ": not a JSON object: " + e.what(), "file");
      }
      if (!j.is_object()) throw error(error_kind::failed, where(path, line_no) + ": expected a JSON object", "file");
      if (j.contains("meta")) continue;
      for (size_t i = 0; i < fields.size(); ++i) {
        auto it = j.find(fields[i]);
        if (it == j.end() || it->is_null())
          values[i].clear();
        else
          values[i] = it->is_string() ? it->get<std::string>() : it->dump();
      }
    } else {
      auto cells = split_csv(t);
      if (column.empty()) {  // the header row
        for (const auto& f : fields) {
          int idx = -1;
          for (size_t c = 0; c < cells.size(); ++c)
            if (cells[c] == f) idx = static_cast<int>(c);
          column.push_back(idx);
        }
        continue;
      }
      for (size_t i = 0; i < fields.size(); ++i)
        values[i] = column[i] >= 0 && size_t(column[i]) < cells.size() ? cells[column[i]] : std::string();
    }
    fn(values, line_no);
  }
}

double record_number(const std::string& text, const std::string& path, size_t line_no, const std::string& field) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end)
    throw error(error_kind::failed,
                where(path, line_no) + ": field '" + field + "' must be a number, got '" + text + "'", field);
  return v;
}

}  // namespace troupe::sim

// Reading the simulator's input tables (measured steps, traces, empirical lengths):
// CSV with a header row, or JSON Lines with one object per line. One reader, so both
// formats accept the same field names everywhere.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace troupe::sim {

// True when the path names a JSON Lines file (.jsonl, .ndjson or .json).
bool is_jsonl_path(const std::string& path);

// Calls fn(values, line_no) for each record, with the values of `fields` in that order
// as text (empty when the record lacks the field). Blank lines and lines starting with
// '#' are skipped; so are JSONL objects holding a "meta" key. Throws troupe::error
// naming the file and line when a line cannot be parsed.
using record_fn = std::function<void(const std::vector<std::string>& values, size_t line_no)>;
void for_each_record(const std::string& path, const std::vector<std::string>& fields, const record_fn& fn);

// A field's number; throws troupe::error naming file, line and field otherwise.
double record_number(const std::string& text, const std::string& path, size_t line_no, const std::string& field);

}  // namespace troupe::sim

// The filters, tests, methods of str/dict/list and global functions a template can call
// (jinja_builtins.cpp). Each reports misuse through ctx.fail(), at the node that called it.
#pragma once
#include <optional>
#include <string_view>

#include "src/chat/jinja_ast.h"

namespace troupe::jinja {

// `args.positional[0]` is the filtered value.
value apply_filter(std::string_view name, const call_args& args, render_context& ctx);
// `args.positional[0]` is the tested value.
bool apply_test(std::string_view name, const call_args& args, render_context& ctx);
// obj.name(args) for a built-in method of obj's type; nullopt when there is none.
std::optional<value> call_method(const value& obj, std::string_view name, const call_args& args, render_context& ctx);
// Whether a filter or test of that name exists (the parser rejects unknown ones).
bool is_filter(std::string_view name);
bool is_test(std::string_view name);

// range, namespace, raise_exception, strftime_now.
void add_globals(scope& globals);

// Python's iteration: a list's items, a dict's keys, a string's characters; an undefined
// value iterates as empty, as Jinja's Undefined does.
value_list iterate(const value& v, render_context& ctx);
// Python's len().
int64_t length(const value& v, render_context& ctx);

}  // namespace troupe::jinja

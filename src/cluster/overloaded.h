// std::visit over a set of lambdas: std::visit(overloaded{[](a&) {...}, [](b&) {...}}, v).
#pragma once

namespace troupe {

template <class... Ts>
struct overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
overloaded(Ts...) -> overloaded<Ts...>;

}  // namespace troupe

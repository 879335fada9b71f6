#include "structured_attrs.h"

#include <climits>
#include <cmath>
#include <cstdint>

namespace narcache::agent {
namespace {

bool isShellVariableName(const std::string& key) {
  if (key.empty()) return false;
  auto letter = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!letter(key[0])) return false;
  for (char c : key) {
    if (!letter(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string shellEscape(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

// Nix's value.get<int>(): a C++ conversion to int, which wraps integers past 32 bits, and turns
// a float outside int's range into INT_MIN (what x86-64's conversion gives).
int asNixInt(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return static_cast<int>(value.get<std::uint64_t>());
  if (value.is_number_integer()) return static_cast<int>(value.get<std::int64_t>());
  const double d = value.get<double>();
  if (!(d > -2147483649.0 && d < 2147483648.0)) return INT_MIN;
  return static_cast<int>(d);
}

// A value bash can hold as one word, as Nix 2.8 writes it; nullopt for the others (floats with
// a fraction, lists, objects).
std::optional<std::string> simpleShellValue(const nlohmann::json& value) {
  if (value.is_string()) return shellEscape(value.get<std::string>());
  if (value.is_number()) {
    const float f = value.get<float>();
    if (std::ceil(f) == f) return std::to_string(asNixInt(value));
    return std::nullopt;
  }
  if (value.is_null()) return std::string("''");
  if (value.is_boolean()) return value.get<bool>() ? std::string("1") : std::string();
  return std::nullopt;
}

std::string shellDeclarations(const nlohmann::json& attrs) {
  std::string sh;
  for (const auto& [key, value] : attrs.items()) {
    if (!isShellVariableName(key)) continue;
    if (auto simple = simpleShellValue(value)) {
      sh += "declare " + key + "=" + *simple + "\n";
    } else if (value.is_array()) {
      std::string words;
      bool ok = true;
      for (const auto& element : value) {
        auto s = simpleShellValue(element);
        if (!s) {
          ok = false;
          break;
        }
        words += *s + " ";
      }
      if (ok) sh += "declare -a " + key + "=(" + words + ")\n";
    } else if (value.is_object()) {
      std::string pairs;
      bool ok = true;
      for (const auto& [k, v] : value.items()) {
        auto s = simpleShellValue(v);
        if (!s) {
          ok = false;
          break;
        }
        pairs += "[" + shellEscape(k) + "]=" + *s + " ";
      }
      if (ok) sh += "declare -A " + key + "=(" + pairs + ")\n";
    }
  }
  return sh;
}

}  // namespace

Result<std::optional<nlohmann::json>> parseStructuredAttrs(const Derivation& drv) {
  auto it = drv.env.find("__json");
  if (it == drv.env.end()) return std::optional<nlohmann::json>();
  nlohmann::json attrs;
  try {
    attrs = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    return fail(ErrorCode::kInvalidArgument,
                std::string("cannot process __json attribute: ") + e.what());
  }
  if (!attrs.is_object()) {
    return fail(ErrorCode::kInvalidArgument,
                "cannot process __json attribute: it is not a JSON object");
  }
  return std::optional<nlohmann::json>(std::move(attrs));
}

StructuredAttrsFiles structuredAttrsFiles(nlohmann::json attrs, const Derivation& drv) {
  nlohmann::json outputs = nlohmann::json::object();
  for (const auto& [name, out] : drv.outputs) outputs[name] = out.path;
  attrs["outputs"] = std::move(outputs);
  return {rewriteOutputPlaceholders(attrs.dump(), drv),
          rewriteOutputPlaceholders(shellDeclarations(attrs), drv)};
}

}  // namespace narcache::agent

// Command-line flags and environment variables with the reference's names.
//
// Every option has an environment name (the reference's, e.g. TRAIN_SEQ_LEN) and the matching
// flag (--train-seq-len). Precedence: flag > environment > default. `--help` lists every option
// with its default and its current value. Unknown flags and malformed values are errors that name
// the option.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "pgolf/core/error.hpp"

namespace pgolf::run {

inline std::string flag_for_env(const std::string& env) {
  std::string f = "--";
  for (char c : env) f += c == '_' ? '-' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return f;
}

class OptionSet {
 public:
  using Target = std::variant<int*, std::int64_t*, double*, std::string*, bool*>;

  OptionSet(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

  // Registers an option; *target holds its default until parse() runs.
  template <class T>
  void add(const std::string& env, T* target, const std::string& help) {
    options_.push_back(Option{env, flag_for_env(env), Target{target}, help, to_text(Target{target})});
  }

  // A positional-free, flag-only switch such as --resume (no environment name).
  void add_switch(const std::string& flag, bool* target, const std::string& help) {
    options_.push_back(Option{"", flag, Target{target}, help, "0"});
  }

  // Returns false when --help was given (the help text has been printed to stdout).
  bool parse(int argc, char** argv) {
    for (auto& o : options_) {
      if (o.env.empty()) continue;
      if (const char* v = std::getenv(o.env.c_str())) assign(o, v, "environment variable " + o.env);
    }
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        std::fputs(help().c_str(), stdout);
        return false;
      }
      std::string name = arg, value;
      bool has_value = false;
      if (const auto eq = arg.find('='); eq != std::string::npos && arg.rfind("--", 0) == 0) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
        has_value = true;
      }
      Option* o = find(name);
      if (!o) PGOLF_FAIL("unknown argument '" << arg << "'; run " << program_ << " --help for the list of options");
      if (o->env.empty() && std::holds_alternative<bool*>(o->target) && !has_value) {
        *std::get<bool*>(o->target) = true;
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) PGOLF_FAIL("option " << name << " needs a value");
        value = argv[++i];
      }
      assign(*o, value, "option " + name);
    }
    return true;
  }

  std::string help() const {
    std::ostringstream os;
    os << "Usage: " << program_ << " [--option value | --option=value]...\n\n" << summary_ << "\n\n";
    os << "Every option can also be set through its environment variable; a flag wins over the environment.\n\n";
    for (const auto& o : options_) {
      os << "  " << o.flag;
      if (!o.env.empty()) os << "  (" << o.env << ")";
      os << "\n      " << o.help << " [default: " << o.default_text << "]\n";
    }
    return os.str();
  }

  // "NAME=value" for every option, one line, for the run log.
  std::string values_line() const {
    std::string s;
    for (const auto& o : options_) {
      if (o.env.empty()) continue;
      if (!s.empty()) s += ' ';
      s += o.env + "=" + to_text(o.target);
    }
    return s;
  }

 private:
  struct Option {
    std::string env, flag;
    Target target;
    std::string help, default_text;
  };

  Option* find(const std::string& flag) {
    for (auto& o : options_) {
      if (o.flag == flag) return &o;
    }
    return nullptr;
  }

  static std::string to_text(const Target& t) {
    return std::visit(
        [](auto* p) -> std::string {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            return *p;
          } else if constexpr (std::is_same_v<T, bool>) {
            return *p ? "1" : "0";
          } else {
            std::ostringstream os;
            os << *p;
            return os.str();
          }
        },
        t);
  }

  static void assign(Option& o, const std::string& value, const std::string& where) {
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            *p = value;
          } else if constexpr (std::is_same_v<T, bool>) {
            if (value == "1" || value == "true") *p = true;
            else if (value == "0" || value == "false") *p = false;
            else PGOLF_FAIL(where << ": expected 0/1/true/false, got '" << value << "'");
          } else if constexpr (std::is_same_v<T, double>) {
            char* end = nullptr;
            errno = 0;
            const double d = std::strtod(value.c_str(), &end);
            if (value.empty() || *end != '\0' || errno != 0) PGOLF_FAIL(where << ": expected a number, got '" << value << "'");
            *p = d;
          } else {
            char* end = nullptr;
            errno = 0;
            const long long v = std::strtoll(value.c_str(), &end, 10);
            if (value.empty() || *end != '\0' || errno != 0 || v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
              PGOLF_FAIL(where << ": expected an integer, got '" << value << "'");
            }
            *p = static_cast<T>(v);
          }
        },
        o.target);
  }

  std::string program_, summary_;
  std::vector<Option> options_;
};

}  // namespace pgolf::run

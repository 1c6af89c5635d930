// The llmtk command line: each verb group registers its subcommands on the CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

#include "ops/ops.hpp"

namespace llmtk::cli {

void add_arch_commands(CLI::App& app);
void add_tokenizer_commands(CLI::App& app);
void add_data_commands(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_bench_commands(CLI::App& app);
void add_experiment_commands(CLI::App& app);

// Thrown by a verb that finished its work but must exit with another status than 0 (a run
// stopped by SIGINT exits 130, as shells expect, after writing its checkpoint); main returns it.
struct ExitStatus {
  int code;
};

// The backends this build has, as help text lists them: "reference, cpu or cuda".
inline std::string device_list() {
  const std::vector<std::string> names = ops::backends();
  std::string list;
  for (std::size_t i = 0; i < names.size(); ++i)
    list += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return list;
}

// The check of every --device option: a backend of this build, and for a mistake the backend it
// most likely means, with what that one runs ("gpu": "cuda runs on the first NVIDIA GPU; ...").
inline CLI::Validator device_names() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (ops::find_backend(v)) return "";
        const ops::BackendInfo* meant = ops::find_backend_info(ops::suggest_backend(v));
        return "'" + v + "' is not a device: use " + device_list() +
               (meant ? " (" + std::string(meant->table->backend) + " " + meant->description + ")" : std::string());
      },
      device_list());
}

}  // namespace llmtk::cli

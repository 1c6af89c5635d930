// The llmtk command line: each verb group registers its subcommands on the CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace llmtk::cli {

void add_arch_commands(CLI::App& app);
void add_tokenizer_commands(CLI::App& app);
void add_data_commands(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_bench_commands(CLI::App& app);

// The check of every --device option: cpu, reference or cuda, and a hint for the usual mistakes.
inline CLI::Validator device_names() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (v == "cpu" || v == "reference" || v == "cuda") return "";
        const bool gpu = v == "gpu" || v == "nvidia" || v.starts_with("cuda:");
        return "'" + v + "' is not a device: use cpu, reference or cuda" +
               (gpu ? std::string(" (cuda runs on the first NVIDIA GPU; pick another with CUDA_VISIBLE_DEVICES)")
                    : std::string());
      },
      "cpu, reference or cuda");
}

}  // namespace llmtk::cli

// The llmtk command line: each verb group registers its subcommands on the CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace llmtk::cli {

void add_arch_commands(CLI::App& app);
void add_tokenizer_commands(CLI::App& app);
void add_data_commands(CLI::App& app);
void add_train_commands(CLI::App& app);
void add_bench_commands(CLI::App& app);

}  // namespace llmtk::cli

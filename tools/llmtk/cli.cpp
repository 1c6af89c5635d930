// llmtk::cli::run: the command line. `llmtk --help` lists the verbs.
#include "cli.hpp"

#include <fmt/core.h>

#include <csignal>
#include <filesystem>

#include "commands.hpp"
#include "core/error.hpp"

int llmtk::cli::run(int argc, char** argv) {
  // A write past the file size limit (ulimit -f) fails with EFBIG, which the writers report as an
  // error naming the file, instead of SIGXFSZ ending the process mid-write (docs/reliability.md).
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"llmtk: the LLM Training Toolkit"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();  // --help shows every option's default
  app.set_version_flag("--version", "llmtk " LLMTK_VERSION);
  app.footer("Guides: README.md and docs/ (training.md, cuda.md, ...). `llmtk VERB --help` for a verb's options.");
  llmtk::cli::add_arch_commands(app);
  llmtk::cli::add_tokenizer_commands(app);
  llmtk::cli::add_data_commands(app);
  llmtk::cli::add_train_commands(app);
  llmtk::cli::add_bench_commands(app);
  llmtk::cli::add_experiment_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const llmtk::cli::ExitStatus& s) {
    return s.code;
  } catch (const llmtk::Error& e) {
    fmt::print(stderr, "llmtk: error: {}\n", e.what());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A folder or file the machine refused (permissions, a full disk): not a bug; its paths say where.
    fmt::print(stderr, "llmtk: error: {}\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "llmtk: error: out of memory; are the sizes right?\n");
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "llmtk: internal error: {}\n", e.what());
    return 4;
  }
  return 0;
}

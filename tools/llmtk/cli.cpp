// llmtk::cli::run: the command line. `llmtk --help` lists the verbs.
#include "cli.hpp"

#include <fmt/core.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include "commands.hpp"
#include "core/communicator.hpp"
#include "core/error.hpp"

namespace {

// Prints why the command failed and returns its exit code. In a distributed run the message names
// the rank, and the whole job ends: the other ranks would otherwise wait for this one in their
// next collective until the timeout.
int failed(int code, const char* kind, const char* what) {
  if (!llmtk::distributed()) {
    // Started by an MPI launcher but failing before MPI opened (a recipe's error): the launcher's
    // environment names the rank, so that each rank's copy of the message says which it is.
    std::string rank;
    if (llmtk::launched_by_mpi()) {
      auto env = [](const char* name) { const char* v = std::getenv(name); return v ? std::string(v) : std::string(); };
      const std::pair<const char*, const char*> vars[] = {
          {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}, {"PMI_RANK", "PMI_SIZE"}, {"SLURM_PROCID", "SLURM_NTASKS"}};
      for (const auto& [r, n] : vars)
        if (rank.empty() && !env(r).empty() && !env(n).empty()) rank = " (rank " + env(r) + " of " + env(n) + ")";
    }
    fmt::print(stderr, "llmtk{}: {}{}\n", rank, kind, what);
    return code;
  }
  auto& w = llmtk::world();
  fmt::print(stderr, "llmtk (rank {} of {}): {}{}\n", w.rank(), w.size(), kind, what);
  std::fflush(stderr);
  w.abort(code);
  return code;  // abort() does not return
}

}  // namespace

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
    return failed(2, "error: ", e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    // A folder or file the machine refused (permissions, a full disk): not a bug; its paths say where.
    return failed(2, "error: ", e.what());
  } catch (const std::bad_alloc&) {
    return failed(3, "error: ", "out of memory; are the sizes right?");
  } catch (const std::exception& e) {
    return failed(4, "internal error: ", e.what());
  }
  return 0;
}

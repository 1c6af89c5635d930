// The llmtk command line as a function, for a project's own command (docs/library.md): its main
// is `return llmtk::cli::run(argc, argv);`, and the architectures it registers with
// LLMTK_REGISTER_ARCH (models/user.hpp) appear in every verb — `arch list`, `train`, `eval` ...
#pragma once

namespace llmtk::cli {

// Parses the arguments and runs the verb; returns the process's exit status: 0, 2 for an error
// the user can fix (printed as "llmtk: error: ..."), 3 out of memory, 4 an internal error, 130
// for a run stopped by SIGINT after its checkpoint.
int run(int argc, char** argv);

}  // namespace llmtk::cli

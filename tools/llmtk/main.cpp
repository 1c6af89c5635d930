// llmtk: the command line (tools/llmtk/cli.cpp). A project of its own builds the same command with
// its own architectures from the installed library (docs/library.md, examples/external/).
#include "cli.hpp"

int main(int argc, char** argv) { return llmtk::cli::run(argc, argv); }

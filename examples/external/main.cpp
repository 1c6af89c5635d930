// my-llmtk: llmtk's command line with this project's architectures (my_block.hpp registers
// my-tiny when this translation unit is linked in).
#include <llmtk/cli.hpp>

#include "my_block.hpp"

int main(int argc, char** argv) { return llmtk::cli::run(argc, argv); }

# Project-wide warnings and sanitizers, applied to every llmtk target through llmtk_options.
add_library(llmtk_options INTERFACE)
target_compile_options(llmtk_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                       -Wno-sign-conversion -Wnon-virtual-dtor)
if(LLMTK_WERROR)
  target_compile_options(llmtk_options INTERFACE -Werror)
endif()
if(LLMTK_SANITIZE)
  string(REPLACE ";" "," _san "${LLMTK_SANITIZE}")
  target_compile_options(llmtk_options INTERFACE -fsanitize=${_san} -fno-omit-frame-pointer)
  target_link_options(llmtk_options INTERFACE -fsanitize=${_san})
endif()

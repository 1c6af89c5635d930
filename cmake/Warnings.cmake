# Project-wide warnings and sanitizers, applied to every llmtk target through llmtk_options.
# C++ gets the full set (warnings are errors in CI); CUDA (.cu, compiled by nvcc) gets the host
# compiler's -Wall, and nvcc's own warnings, without -Werror: CUB's headers are not ours to fix.
add_library(llmtk_options INTERFACE)
target_compile_options(llmtk_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion
                       -Wno-sign-conversion -Wnon-virtual-dtor>
                       $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
if(LLMTK_WERROR)
  target_compile_options(llmtk_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(LLMTK_SANITIZE)
  string(REPLACE ";" "," _san "${LLMTK_SANITIZE}")
  target_compile_options(llmtk_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${_san} -fno-omit-frame-pointer>)
  target_link_options(llmtk_options INTERFACE -fsanitize=${_san})
endif()

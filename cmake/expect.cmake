# Runs one command and checks how it ends: used for compile-fail tests and command-line tests.
#   cmake -DCMD="a;b;c" -DEXPECT=fail|pass [-DREGEX=...] -P expect.cmake
# With EXPECT=fail the command must exit non-zero AND print REGEX (so it fails for the right
# reason); with EXPECT=pass it must exit zero (and print REGEX if given).
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
if(EXPECT STREQUAL "fail")
  if(rc EQUAL 0)
    message(FATAL_ERROR "expected a failure, but the command succeeded:\n${CMD}\n${all}")
  endif()
elseif(NOT rc EQUAL 0)
  message(FATAL_ERROR "expected success, but the command exited ${rc}:\n${CMD}\n${all}")
endif()
if(DEFINED REGEX AND NOT all MATCHES "${REGEX}")
  message(FATAL_ERROR "the output does not mention '${REGEX}':\n${all}")
endif()
message(STATUS "ok: ${REGEX}")

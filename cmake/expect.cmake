# Runs one command and checks how it ends: used for compile-fail tests and command-line tests.
#   cmake -DCMD="a;b;c" -DEXPECT=fail|pass [-DREGEX=...] [-DMAX_LINES=n] -P expect.cmake
# With EXPECT=fail the command must exit non-zero AND print REGEX (so it fails for the right
# reason); with EXPECT=pass it must exit zero (and print REGEX if given). With MAX_LINES, its
# output (stdout and stderr) must be at most that many lines: a compile-fail case's error must
# stay short enough to read.
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
if(DEFINED MAX_LINES)
  string(REGEX MATCHALL "\n" newlines "${all}")
  list(LENGTH newlines lines)
  if(NOT all STREQUAL "" AND NOT all MATCHES "\n$")
    math(EXPR lines "${lines} + 1")  # a last line without its newline
  endif()
  if(lines GREATER MAX_LINES)
    message(FATAL_ERROR "the output has ${lines} lines, more than ${MAX_LINES}:\n${all}")
  endif()
endif()
message(STATUS "ok: ${REGEX}")

# Writes OUTPUT, the package's modelbench/_build_info.py: the git revision of
# SOURCE_DIR when it is built (None outside a git checkout or without git),
# so an installed package knows what it was built from. Run at every build
# (cmake -DSOURCE_DIR=... -DOUTPUT=... -P build_info.cmake); the file is
# rewritten only when its content changes.
execute_process(
  COMMAND git -C "${SOURCE_DIR}" rev-parse HEAD
  OUTPUT_VARIABLE revision OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE failed ERROR_QUIET)
if(failed OR NOT revision MATCHES "^[0-9a-f]+$")
  set(value "None")
else()
  set(value "\"${revision}\"")
endif()
set(content "\"\"\"Written by the build (cmake/build_info.cmake); not in the source tree.\"\"\"\n\nGIT_REVISION: str | None = ${value}\n")
set(old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUTPUT}" "${content}")
endif()

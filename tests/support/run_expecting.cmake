# cmake -DCOMMAND="prog|arg|..." -DEXIT_CODE=N -DOUTPUT=regex -P run_expecting.cmake
# Runs COMMAND ('|' separates its words) and fails unless it exits with
# EXIT_CODE and its output (stdout and stderr) matches OUTPUT.
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(NOT code STREQUAL "${EXIT_CODE}")
  message(FATAL_ERROR "exit code ${code}, expected ${EXIT_CODE}")
endif()
if(NOT out MATCHES "${OUTPUT}")
  message(FATAL_ERROR "the output does not match '${OUTPUT}'")
endif()

# Runs attnkit_llama2 greedily for 200 steps from BOS with the full cache and
# compares stdout with stories260K.greedy200.txt plus the newline llama2.c
# prints after it. Prints "SKIPPED: ..." (a skip for CTest) without the model.
foreach(f stories260K.bin tok512.bin stories260K.greedy200.txt)
  if(NOT EXISTS "${MODELS}/${f}")
    message("SKIPPED: ${MODELS}/${f} not found (configure with -DATTNKIT_LLAMA2_MODELS=DIR)")
    return()
  endif()
endforeach()
execute_process(
  COMMAND "${BINARY}" --model "${MODELS}/stories260K.bin" --tokenizer "${MODELS}/tok512.bin"
          --steps 200 --temperature 0
  OUTPUT_VARIABLE got RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "attnkit_llama2 exited with ${rc}")
endif()
file(READ "${MODELS}/stories260K.greedy200.txt" want)
if(NOT got STREQUAL "${want}\n")
  message(FATAL_ERROR "greedy output differs from stories260K.greedy200.txt\n--- got:\n${got}\n--- want:\n${want}")
endif()
message("greedy output matches stories260K.greedy200.txt (${MODELS})")

# Runs attnkit_llama2 --batch on PROMPTS (one prompt a line) and each prompt
# alone, greedily, with the policy arguments in POLICY ("|"-separated), and
# requires the batch's stdout to be the single runs' stdouts one after another,
# byte for byte. Prints "SKIPPED: ..." (a skip for CTest) without the model.
foreach(f stories260K.bin tok512.bin)
  if(NOT EXISTS "${MODELS}/${f}")
    message("SKIPPED: ${MODELS}/${f} not found (configure with -DATTNKIT_LLAMA2_MODELS=DIR)")
    return()
  endif()
endforeach()
string(REPLACE "|" ";" policy "${POLICY}")
set(common --model "${MODELS}/stories260K.bin" --tokenizer "${MODELS}/tok512.bin" --steps 300 --temperature 0
           ${policy})
execute_process(COMMAND "${BINARY}" ${common} --batch "${PROMPTS}" OUTPUT_VARIABLE batch RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "attnkit_llama2 --batch exited with ${rc}")
endif()
# One entry per line, empty lines kept (file(STRINGS) would drop them); prompts hold no ";".
file(READ "${PROMPTS}" raw)
string(REGEX MATCHALL "[^\n]*\n" lines "${raw}")
list(LENGTH lines count)
set(alone "")
foreach(line IN LISTS lines)
  string(REPLACE "\n" "" line "${line}")
  execute_process(COMMAND "${BINARY}" ${common} --prompt "${line}" OUTPUT_VARIABLE one RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "attnkit_llama2 --prompt '${line}' exited with ${rc}")
  endif()
  string(APPEND alone "${one}")
endforeach()
if(NOT batch STREQUAL alone)
  message(FATAL_ERROR "--batch output differs from the prompts run alone (${POLICY})\n--- batch:\n${batch}\n--- alone:\n${alone}")
endif()
message("${count} prompts: --batch output equals each prompt alone, byte for byte (${POLICY})")

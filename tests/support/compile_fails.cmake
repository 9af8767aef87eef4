# cmake -DCOMPILER=c++ -DSOURCE=f.cpp -DINCLUDE=dir -DXSIMD_INCLUDE=dir -DMESSAGE=regex -DMAX_CHARS=N -P compile_fails.cmake
# Compiles SOURCE (C++17, no arch flags) and passes only if the compiler
# rejects it, its diagnostics match MESSAGE, and they are at most MAX_CHARS long.
set(includes -I${INCLUDE})
if(XSIMD_INCLUDE AND NOT XSIMD_INCLUDE STREQUAL "/usr/include")  # -isystem /usr/include breaks include_next
  list(APPEND includes -isystem ${XSIMD_INCLUDE})
endif()
execute_process(COMMAND ${COMPILER} -std=c++17 ${includes} -fsyntax-only ${SOURCE}
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE out)
string(LENGTH "${out}" chars)
message("${out}\n(${chars} characters of diagnostics)")
if(code EQUAL 0)
  message(FATAL_ERROR "it compiled")
endif()
if(NOT out MATCHES "${MESSAGE}")
  message(FATAL_ERROR "the diagnostics do not say '${MESSAGE}'")
endif()
if(chars GREATER MAX_CHARS)
  message(FATAL_ERROR "${chars} characters of diagnostics, more than ${MAX_CHARS}")
endif()

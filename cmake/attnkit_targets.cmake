# Flags for the project's own programs (tests, benchmarks, examples); the
# attnkit::attnkit target itself imposes none on its users.
# BASELINE: build for the compiler's default arch even when ATTNKIT_NATIVE is on.
function(attnkit_program_defaults target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "BASELINE" "" "")
  target_link_libraries(${target} PRIVATE attnkit::attnkit)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
    if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      # GoogleTest's TYPED_TEST_SUITE passes an empty __VA_ARGS__, which clang's -Wpedantic flags.
      target_compile_options(${target} PRIVATE -Wno-gnu-zero-variadic-macro-arguments)
    endif()
    if(ATTNKIT_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
    if(ATTNKIT_NATIVE AND NOT arg_BASELINE)
      target_compile_options(${target} PRIVATE -march=native)
    endif()
    if(ATTNKIT_SANITIZE)
      # Line tables only: all the sanitizers' reports need, at less compile time than full -g.
      if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
        set(line_tables -gline-tables-only)
      else()
        set(line_tables -g1)
      endif()
      target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all
                                               -fno-omit-frame-pointer ${line_tables})
      target_link_options(${target} PRIVATE -fsanitize=address,undefined)
    endif()
  endif()
endfunction()

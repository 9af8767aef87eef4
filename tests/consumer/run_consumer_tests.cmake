# Installs the attnkit build tree to a scratch prefix, then configures, builds and
# runs the consumer project twice: via find_package and via add_subdirectory.
# Inputs: ATTNKIT_SOURCE_DIR, ATTNKIT_BUILD_DIR, WORK_DIR, GENERATOR.
function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run_step(${CMAKE_COMMAND} --install ${ATTNKIT_BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/attnkit/attnkit.hpp)
  message(FATAL_ERROR "the install did not place attnkit/attnkit.hpp under ${prefix}/include")
endif()

foreach(via package subdirectory)
  set(build ${WORK_DIR}/${via})
  run_step(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR} -B ${build} -G ${GENERATOR}
           -DATTNKIT_VIA=${via} -DATTNKIT_SOURCE_DIR=${ATTNKIT_SOURCE_DIR}
           -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  run_step(${CMAKE_COMMAND} --build ${build})
  run_step(${build}/consumer)
  if(via STREQUAL "package")
    run_step(${build}/consumer_dispatch)
  endif()
endforeach()

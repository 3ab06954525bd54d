# package_test.cmake: install libcyclediff into a scratch prefix, build native/example against it with
# find_package(cyclediff), and run the result (its usage message proves it links and loads).
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK}/prefix)
foreach(f include/cyclediff.h lib/cmake/cyclediff/cyclediffConfig.cmake lib/cmake/cyclediff/cyclediffConfigVersion.cmake
          lib/cmake/cyclediff/cyclediffTargets.cmake)
  if(NOT EXISTS ${WORK}/prefix/${f})
    message(FATAL_ERROR "install is missing ${f}")
  endif()
endforeach()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/native/example -B ${WORK}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${WORK}/prefix -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK}/build)
execute_process(COMMAND ${WORK}/build/cyclediff_edit RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "usage:")
  message(FATAL_ERROR "the example built against the installed package did not run (${rc}): ${err}")
endif()
message(STATUS "find_package(cyclediff) from ${WORK}/prefix: example host builds and runs")

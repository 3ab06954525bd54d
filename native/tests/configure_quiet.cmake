# ctest -P script: configuring the project with the torch executor prints no CMake warning (libtorch's
# TorchConfig.cmake once warned "library kineto not found" on every configure of a wheel's libtorch).
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK} -G ${GENERATOR} -DCYCLEDIFF_PYTHON=${PYTHON}
                        -DCYCLEDIFF_WITH_TORCH=ON
                        -DCYCLEDIFF_BUILD_TESTS=OFF -DCYCLEDIFF_BUILD_EXAMPLE=OFF
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configure failed:\n${out}\n${err}")
endif()
if(err MATCHES "CMake Warning" OR err MATCHES "kineto")
  message(FATAL_ERROR "configure warned:\n${err}")
endif()
if(NOT out MATCHES "torch executor ON")
  message(FATAL_ERROR "the torch executor was not configured, so this check saw nothing:\n${out}")
endif()

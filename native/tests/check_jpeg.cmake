# ctest -P script: FILE exists and starts with a JPEG's SOI marker (FF D8), i.e. the example host wrote a JPEG
# for a .jpg OUTPUT (it once wrote PNG bytes there), and no temp file is left beside it.
file(READ "${FILE}" head LIMIT 2 HEX)
if(NOT head STREQUAL "ffd8")
  message(FATAL_ERROR "${FILE} does not start with a JPEG marker (got '${head}')")
endif()
get_filename_component(dir "${FILE}" DIRECTORY)
file(GLOB left "${FILE}.tmp-*" "${FILE}.probe-*")
if(left)
  message(FATAL_ERROR "temp files left beside ${FILE}: ${left}")
endif()

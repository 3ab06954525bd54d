# ctest -P script: the openvino executor reads the export's OpenVINO IR and checks it, and falls back to the
# ONNX graphs when the manifest records no IR. EXPORT is copied into WORK twice:
#   1. one byte appended to openvino/unet.bin: the engine must refuse with HASH_MISMATCH naming the IR file
#      (so the IR, not the ONNX graph, is what it reads);
#   2. extra.openvino_ir removed and DIR/openvino deleted: the edit must succeed from the ONNX graphs.
# HOST is the example host (cyclediff_edit); it uses executor "auto", which is openvino on the CPU.
file(REMOVE_RECURSE "${WORK}")
file(COPY "${EXPORT}/" DESTINATION "${WORK}/ir")
file(APPEND "${WORK}/ir/openvino/unet.bin" "x")
execute_process(COMMAND "${HOST}" "${WORK}/ir" "${EXPORT}/input.png" "${WORK}/ir.png" "a" "b" 2
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "HASH_MISMATCH: model unet: .*openvino/unet.xml")
  message(FATAL_ERROR "a changed IR .bin was not refused with HASH_MISMATCH naming openvino/unet.xml "
                      "(rc ${rc}): ${out}${err}")
endif()

file(COPY "${EXPORT}/" DESTINATION "${WORK}/onnx")
file(REMOVE_RECURSE "${WORK}/onnx/openvino")
file(READ "${WORK}/onnx/manifest.json" manifest)
string(JSON section ERROR_VARIABLE no_section GET "${manifest}" extra openvino_ir)
if(no_section)
  message(FATAL_ERROR "${EXPORT} records no OpenVINO IR (extra.openvino_ir): the IR case above proves nothing")
endif()
string(JSON manifest REMOVE "${manifest}" extra openvino_ir)
file(WRITE "${WORK}/onnx/manifest.json" "${manifest}")
execute_process(COMMAND "${HOST}" "${WORK}/onnx" "${EXPORT}/input.png" "${WORK}/onnx.png" "a" "b" 2
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT EXISTS "${WORK}/onnx.png")
  message(FATAL_ERROR "the edit from the ONNX graphs (no extra.openvino_ir) failed (rc ${rc}): ${out}${err}")
endif()

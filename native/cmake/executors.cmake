# executors.cmake: which executors libcyclediff gets (openvino, torch, tensorrt). Sets CYCLEDIFF_EXECUTOR_{SOURCES,DEFINES,LIBRARIES}
# and CYCLEDIFF_ABI_DEFINES (libtorch's _GLIBCXX_USE_CXX11_ABI, shared by every C++ file that passes
# std::string across the executor interface).
set(CYCLEDIFF_EXECUTOR_SOURCES "")
set(CYCLEDIFF_EXECUTOR_DEFINES "")
set(CYCLEDIFF_EXECUTOR_LIBRARIES "")
set(CYCLEDIFF_ABI_DEFINES "")
set(CYCLEDIFF_HAVE_TORCH OFF)
set(CYCLEDIFF_HAVE_TENSORRT OFF)
set(CYCLEDIFF_HAVE_OPENVINO OFF)

# Also under CYCLEDIFF_SANITIZE: OpenVINO's TBB dlopens libtbbbind with RTLD_DEEPBIND, which the ASan runtime
# refuses, so native/tests/CMakeLists.txt gives the sanitizer tests TBB_ENABLE_SANITIZERS=1 (oneTBB's switch that
# drops the flag). A host running a sanitizer build of the library outside ctest must set it too.
if(CYCLEDIFF_WITH_OPENVINO)
  if(NOT OpenVINO_DIR AND CYCLEDIFF_PYTHON)
    # The openvino wheel ships OpenVINO's headers, libraries and CMake config (openvino/{include,libs,cmake}).
    execute_process(COMMAND ${CYCLEDIFF_PYTHON} -c "import openvino, os; print(os.path.dirname(openvino.__file__))"
                    OUTPUT_VARIABLE _ov_root OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
    if(_rc EQUAL 0 AND EXISTS "${_ov_root}/cmake/OpenVINOConfig.cmake")
      set(OpenVINO_DIR "${_ov_root}/cmake" CACHE PATH "OpenVINO's CMake config (from the openvino wheel)" FORCE)
    endif()
  endif()
  find_package(OpenVINO QUIET COMPONENTS Runtime)
  if(OpenVINO_FOUND)
    set(CYCLEDIFF_HAVE_OPENVINO ON)
    list(APPEND CYCLEDIFF_EXECUTOR_SOURCES native/src/openvino_executor.cpp native/src/openvino_models.cpp
                                           native/src/mapped_pages.cpp)
    list(APPEND CYCLEDIFF_EXECUTOR_DEFINES CYCLEDIFF_HAVE_OPENVINO)
    list(APPEND CYCLEDIFF_EXECUTOR_LIBRARIES openvino::runtime)
    get_target_property(_ov_lib openvino::runtime IMPORTED_LOCATION_RELEASE)
    if(_ov_lib)
      get_filename_component(CYCLEDIFF_OPENVINO_LIBDIR "${_ov_lib}" DIRECTORY)  # the installed RPATH names it
    endif()
    message(STATUS "cyclediff: openvino executor ON (OpenVINO ${OpenVINO_VERSION} from ${OpenVINO_DIR})")
  else()
    message(STATUS "cyclediff: openvino executor OFF (OpenVINO not found: pip install openvino into "
                   "CYCLEDIFF_PYTHON's environment, or set OpenVINO_DIR)")
  endif()
endif()

if(CYCLEDIFF_WITH_TORCH)
  if(NOT Torch_DIR AND CYCLEDIFF_PYTHON)
    # The PyTorch wheel ships libtorch's headers, libraries and CMake config.
    execute_process(COMMAND ${CYCLEDIFF_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
    if(_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
      # The wheel links kineto (the profiler) into libtorch_cpu, yet TorchConfig.cmake still looks for a separate
      # libkineto and warns "library kineto not found" on every configure: point that lookup at libtorch_cpu,
      # which is linked anyway (a library listed twice links once).
      find_library(kineto_LIBRARY kineto PATHS "${_torch_prefix}/../../lib" NO_DEFAULT_PATH)
      if(NOT kineto_LIBRARY)
        find_library(_cyclediff_torch_cpu torch_cpu PATHS "${_torch_prefix}/../../lib" NO_DEFAULT_PATH)
        if(_cyclediff_torch_cpu)
          set(kineto_LIBRARY "${_cyclediff_torch_cpu}" CACHE FILEPATH "kineto lives in libtorch_cpu" FORCE)
        endif()
      endif()
    endif()
  endif()
  find_package(Torch QUIET)
  if(Torch_FOUND)
    set(CYCLEDIFF_HAVE_TORCH ON)
    list(APPEND CYCLEDIFF_EXECUTOR_SOURCES native/src/torch_executor.cpp)
    list(APPEND CYCLEDIFF_EXECUTOR_DEFINES CYCLEDIFF_HAVE_TORCH)
    list(APPEND CYCLEDIFF_EXECUTOR_LIBRARIES ${TORCH_LIBRARIES})
    string(REGEX MATCH "_GLIBCXX_USE_CXX11_ABI=[01]" _abi "${TORCH_CXX_FLAGS}")
    if(_abi)
      list(APPEND CYCLEDIFF_ABI_DEFINES ${_abi})
    endif()
    message(STATUS "cyclediff: torch executor ON (libtorch ${Torch_VERSION} from ${Torch_DIR})")
  else()
    message(STATUS "cyclediff: torch executor OFF (libtorch not found: pip install torch, or set Torch_DIR)")
  endif()
endif()

if(CYCLEDIFF_WITH_TENSORRT)
  find_package(CUDAToolkit QUIET)
  find_path(TENSORRT_INCLUDE_DIR NvInfer.h PATH_SUFFIXES include include/x86_64-linux-gnu)
  find_library(TENSORRT_LIBRARY nvinfer)
  if(CUDAToolkit_FOUND AND TENSORRT_INCLUDE_DIR AND TENSORRT_LIBRARY)
    set(CYCLEDIFF_HAVE_TENSORRT ON)
    list(APPEND CYCLEDIFF_EXECUTOR_SOURCES native/src/tensorrt_executor.cpp)
    list(APPEND CYCLEDIFF_EXECUTOR_DEFINES CYCLEDIFF_HAVE_TENSORRT)
    list(APPEND CYCLEDIFF_EXECUTOR_LIBRARIES ${TENSORRT_LIBRARY} CUDA::cudart)
    include_directories(SYSTEM ${TENSORRT_INCLUDE_DIR})
    message(STATUS "cyclediff: TensorRT executor ON (${TENSORRT_LIBRARY})")
  else()
    message(STATUS "cyclediff: TensorRT executor OFF (TensorRT and CUDA not found)")
  endif()
endif()

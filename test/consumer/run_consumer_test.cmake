# CTest driver: install pgolf from BUILD_DIR into a fresh prefix, then configure, build and run
# the consumer project against it; and separately through add_subdirectory(SOURCE_DIR).
# Inputs: SOURCE_DIR, BUILD_DIR, WORK_DIR, GENERATOR.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run_step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${name} failed (${rc})\n${out}\n${err}")
  endif()
  message(STATUS "consumer test: ${name}: ok")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run_step("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
foreach(mode package subdirectory)
  run_step("configure (${mode})" "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/test/consumer" -B "${WORK_DIR}/build-${mode}"
           -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix"
           -DPGOLF_CONSUMER_MODE=${mode} "-DPGOLF_SOURCE_DIR=${SOURCE_DIR}" -DPGOLF_BUILD_TESTS=OFF
           -DPGOLF_BUILD_EXAMPLES=OFF -DPGOLF_BUILD_BENCH=OFF)
  run_step("build (${mode})" "${CMAKE_COMMAND}" --build "${WORK_DIR}/build-${mode}" --target consumer tiny_train tiny_quantize tiny_eval)
  run_step("run (${mode})" "${WORK_DIR}/build-${mode}/consumer")
  message(STATUS "${last_output}")
  run_step("model binary --help (${mode})" "${WORK_DIR}/build-${mode}/tiny_train" --help)
endforeach()

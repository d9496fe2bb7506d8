// Uses a few pieces of pgolf from outside the project: the configuration, the CPU model, a loss.
#include <cstdio>
#include <vector>

#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/model/init.hpp"
#include "tiny_config.hpp"

int main() {
  constexpr auto C = consumer::kTiny;
  std::vector<float> params(pgolf::param_count<C>);
  pgolf::init_params<C>(std::span<float>(params), 1);
  pgolf::cpu::Gpt<C> model;
  std::vector<std::int32_t> ids(16, 3), targets(16, 5);
  const double loss = model.forward(params, ids, targets, 1, 16);
  std::printf("consumer: %s params=%lld loss=%.4f\n", pgolf::describe(C).c_str(), static_cast<long long>(pgolf::param_count<C>), loss);
  return loss > 0 ? 0 : 1;
}

// A small persistent thread pool and a deterministic parallel_for.
//
// Work is split into chunks fixed by the grain size alone, never by the thread count, and every
// chunk runs on one thread: as long as a kernel writes each output from one chunk (and combines
// per-chunk partial sums in chunk order), its result is bit-identical for any number of threads.
// PGOLF_NUM_THREADS overrides the thread count (default: hardware concurrency).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pgolf {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int size() const { return num_threads_; }

  // Calls task(i) for every i in [0, n); returns when all have finished. The calling thread works
  // too. The first exception thrown by a task is rethrown here. Nested calls run inline.
  void run(std::int64_t n, const std::function<void(std::int64_t)>& task) {
    if (n <= 0) return;
    if (n == 1 || num_threads_ == 1 || in_worker()) {
      for (std::int64_t i = 0; i < n; ++i) task(i);
      return;
    }
    std::lock_guard run_lock(run_mutex_);  // one job at a time
    {
      std::lock_guard lock(mutex_);
      task_ = &task;
      n_tasks_ = n;
      next_.store(0);
      pending_workers_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_workers_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static bool& in_worker() {
    thread_local bool flag = false;
    return flag;
  }

  void drain() {
    const bool was = in_worker();
    in_worker() = true;
    for (;;) {
      const std::int64_t i = next_.fetch_add(1);
      if (i >= n_tasks_) break;
      try {
        (*task_)(i);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
    in_worker() = was;
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stopping_) return;
      }
      drain();
      {
        std::lock_guard lock(mutex_);
        if (--pending_workers_ == 0) done_.notify_one();
      }
    }
  }

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
  const std::function<void(std::int64_t)>* task_ = nullptr;
  std::int64_t n_tasks_ = 0;
  std::atomic<std::int64_t> next_{0};
  int pending_workers_ = 0;
  std::exception_ptr error_;
};

inline int default_thread_count() {
  if (const char* env = std::getenv("PGOLF_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

inline ThreadPool& default_pool() {
  static ThreadPool pool(default_thread_count());
  return pool;
}

// Calls body(chunk_begin, chunk_end) over [begin, end) in chunks of `grain` elements.
template <class Body>
void parallel_for(std::int64_t begin, std::int64_t end, std::int64_t grain, Body&& body) {
  if (end <= begin) return;
  grain = std::max<std::int64_t>(1, grain);
  const std::int64_t n_chunks = (end - begin + grain - 1) / grain;
  const std::function<void(std::int64_t)> task = [&](std::int64_t c) {
    const std::int64_t b = begin + c * grain;
    body(b, std::min(end, b + grain));
  };
  default_pool().run(n_chunks, task);
}

// Splits [0, n) into chunks of `grain`, computes partial(b, e) per chunk in parallel and folds the
// partials in chunk order: the same sum for any thread count.
template <class T, class Partial>
T parallel_sum(std::int64_t n, std::int64_t grain, Partial&& partial) {
  if (n <= 0) return T{};
  grain = std::max<std::int64_t>(1, grain);
  const std::int64_t n_chunks = (n + grain - 1) / grain;
  std::vector<T> parts(static_cast<std::size_t>(n_chunks));
  parallel_for(0, n_chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) parts[c] = partial(c * grain, std::min(n, (c + 1) * grain));
  });
  T total{};
  for (const T& p : parts) total += p;
  return total;
}

}  // namespace pgolf

// Dependency order of store items: see reference_order.h.

#include "reference_order.h"

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/depth_first_search.hpp>

namespace narcache::narstore {

std::vector<std::size_t> referencesFirst(const std::vector<std::vector<std::size_t>>& refs) {
  using Graph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS>;
  Graph graph(refs.size());
  for (std::size_t i = 0; i < refs.size(); ++i) {
    for (std::size_t r : refs[i]) {
      if (r != i && r < refs.size()) boost::add_edge(i, r, graph);
    }
  }
  // A vertex finishes after everything it reaches: its references come out before it.
  struct Recorder : boost::default_dfs_visitor {
    std::vector<std::size_t>* order;
    void finish_vertex(Graph::vertex_descriptor v, const Graph&) const { order->push_back(v); }
  };
  std::vector<std::size_t> order;
  order.reserve(refs.size());
  Recorder recorder;
  recorder.order = &order;
  boost::depth_first_search(graph, boost::visitor(recorder));
  return order;
}

}  // namespace narcache::narstore
